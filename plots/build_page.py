"""Build plots/page.html: the page `dvc plots show` and `dvc plots diff` fill in (configured as
`plots.html_template` in .dvc/config), with Vega, Vega-Lite and Vega-Embed inlined, so the page
draws its charts with no network. DVC's own page loads them from a CDN and stays blank offline.
The versions are those DVC's renderer (dvc-render 1.0.2) asks the CDN for; each npm tarball is
checked against the SHA-512 the npm registry publishes for it.

    python plots/build_page.py      # needs the npm registry once; the page is committed
"""

import base64
import hashlib
import io
import tarfile
import urllib.request
from pathlib import Path

PACKAGES = {  # name: (version, npm's dist.integrity)
    "vega": ("5.20.2", "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw=="),
    "vega-lite": ("5.2.0", "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw=="),
    "vega-embed": ("6.18.2", "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg=="),
}

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- {versions}, inlined by plots/build_page.py -->
{scripts_inlined}
    <style>
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def minified_script(name: str, version: str, integrity: str) -> str:
    with urllib.request.urlopen(f"https://registry.npmjs.org/{name}/-/{name}-{version}.tgz") as response:
        tarball = response.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if digest != integrity:
        raise SystemExit(f"error: {name}-{version}.tgz does not match npm's published SHA-512")
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
        script = archive.extractfile(f"package/build/{name}.min.js").read().decode()
    if "</script" in script.lower():
        raise SystemExit(f"error: {name}.min.js holds '</script', which would end the inline script")
    return script


def main() -> None:
    scripts = [f"    <script>{minified_script(name, *pinned)}</script>" for name, pinned in PACKAGES.items()]
    versions = ", ".join(f"{name} {version}" for name, (version, _) in PACKAGES.items())
    page = PAGE.replace("{versions}", versions).replace("{scripts_inlined}", "\n".join(scripts))
    (Path(__file__).parent / "page.html").write_text(page)


if __name__ == "__main__":
    main()
