"""The devloop benchmark's inputs, pinned by sha256 and shipped in the full image.

A wheel directory (a fixed set of pure-Python and binary wheels for CPython 3.11 on
manylinux x86_64, about 1,000 files once installed) and Lua 5.4.4's source tarball (about
30,000 lines of C, plain `make posix` with gcc), as Debian's mirror serves it. Both are
fetched on the host when the image is built (the sandboxes have no network), each file's
digest checked against the pins below, and copied to the image's /sb/devloop. The pins are
part of the image's inputs, so changing one rebuilds the image.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sandbench import paths

#: Where the inputs live inside the image (the host sandbox reads them from the rootfs).
IMAGE_DIR = "sb/devloop"
LUA_TARBALL = "lua.tar.gz"
#: The directory the tarball unpacks to.
LUA_DIR = "lua-5.4.4"
LUA_VERSION = "5.4.4"
#: Debian's upstream tarball of the lua5.4 source package (bookworm), on the mirror apt uses.
LUA_POOL_PATH = "pool/main/l/lua5.4/lua5.4_5.4.4.orig.tar.gz"
LUA_SHA256 = "164c7849653b80ae67bec4b7473b884bf5cc8d2dca05653475ec2ed27b9ebf61"


@dataclass(frozen=True)
class Wheel:
    project: str
    version: str
    filename: str
    sha256: str
    #: The module the test phase imports.
    module: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


_MANY = "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
WHEELS: tuple[Wheel, ...] = (
    Wheel("pygments", "2.18.0", "pygments-2.18.0-py3-none-any.whl",
          "b8e6aca0523f3ab76fee51799c488e38782ac06eafcf95e7ba832985c8e7b13a", "pygments"),
    Wheel("jinja2", "3.1.4", "jinja2-3.1.4-py3-none-any.whl",
          "bc5dd2abb727a5319567b7a813e6a2e7318c39f4f487cfe6c89c6f9c7d25197d", "jinja2"),
    Wheel("markupsafe", "2.1.5", f"MarkupSafe-2.1.5-{_MANY}",
          "b91c037585eba9095565a3556f611e3cbfaa42ca1e865f7b8015fe5c7336d5a5", "markupsafe"),
    Wheel("pyyaml", "6.0.2", f"PyYAML-6.0.2-{_MANY}",
          "3ad2a3decf9aaba3d29c8f537ac4b243e36bef957511b4766cb0057d32b0be85", "yaml"),
    Wheel("six", "1.16.0", "six-1.16.0-py2.py3-none-any.whl",
          "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254", "six"),
    Wheel("idna", "3.10", "idna-3.10-py3-none-any.whl",
          "946d195a0d259cbba61165e88e65941f16e9b36ea6ddb97f00452bae8b1287d3", "idna"),
    Wheel("packaging", "24.1", "packaging-24.1-py3-none-any.whl",
          "5b8f2217dbdbd2f7f384c41c628544e6d52f2d0f53c6d0c3ea61aa5d1d7ff124", "packaging"),
    Wheel("attrs", "24.2.0", "attrs-24.2.0-py3-none-any.whl",
          "81921eb96de3191c8258c199618104dd27ac608d9366f5e35d011eae1867ede2", "attrs"),
    Wheel("click", "8.1.7", "click-8.1.7-py3-none-any.whl",
          "ae74fb96c20a0277a1d615f1e4d73c8414f5a98db8b799a7931d1582f3390c28", "click"),
    Wheel("msgpack", "1.1.0", f"msgpack-1.1.0-{_MANY}",
          "5e1da8f11a3dd397f0a32c76165cf0c4eb95b31013a94f6ecc0b280c05c91b59", "msgpack"),
    Wheel("charset-normalizer", "3.4.0", f"charset_normalizer-3.4.0-{_MANY}",
          "3710a9751938947e6327ea9f3ea6332a09bf0ba0c09cae9cb1f250bd1f1549bc",
          "charset_normalizer"),
    Wheel("certifi", "2024.8.30", "certifi-2024.8.30-py3-none-any.whl",
          "922820b53db7a7257ffbda3f597266d435245903d80737e34f8a45ff3e3230d8", "certifi"),
    Wheel("urllib3", "2.2.3", "urllib3-2.2.3-py3-none-any.whl",
          "ca899ca043dcb1bafa3e262d73aa25c465bfb49e0bd9dd5d59f1d0acba2f8fac", "urllib3"),
    Wheel("requests", "2.32.3", "requests-2.32.3-py3-none-any.whl",
          "70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02654d061d6dcc6", "requests"),
    Wheel("pyparsing", "3.1.4", "pyparsing-3.1.4-py3-none-any.whl",
          "a6a7ee4235a3f944aa1fa2249307708f893fe5717dc603503c6c7969c070fb7c", "pyparsing"),
)
FETCH_TIMEOUT_S = 600


def pins() -> dict[str, str]:
    """Every shipped file (path under IMAGE_DIR) and its sha256."""
    out = {LUA_TARBALL: LUA_SHA256}
    out.update({f"wheels/{w.filename}": w.sha256 for w in WHEELS})
    return out


def image_input() -> str:
    """The pins as one string for the image's input hash."""
    return ";".join(f"{k}={v}" for k, v in sorted(pins().items()))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def mismatches(directory: Path) -> list[str]:
    """Pinned files under directory that are missing or whose digest differs, one line each."""
    bad = []
    for rel, want in sorted(pins().items()):
        path = directory / rel
        if not path.is_file():
            bad.append(f"{rel}: missing")
        elif (got := sha256_of(path)) != want:
            bad.append(f"{rel}: sha256 {got}, pinned {want}")
    return bad


def _download_dir() -> Path:
    d = paths.cache("downloads") / "devloop"
    (d / "wheels").mkdir(parents=True, exist_ok=True)
    return d


def _fetch_lua(dest: Path, mirror: str) -> None:
    url = f"{mirror.rstrip('/')}/{LUA_POOL_PATH}"
    tmp = dest.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as fh:  # noqa: S310
            shutil.copyfileobj(resp, fh)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"devloop input: cannot fetch {url}: {exc}") from None
    tmp.rename(dest)


def _fetch_wheels(dest: Path, missing: list[Wheel]) -> None:
    """pip download of exactly the pinned files: --require-hashes makes pip refuse any
    other file, --no-deps keeps the set fixed; the user's pip configuration (a mirror)
    applies."""
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text("".join(f"{w.requirement} --hash=sha256:{w.sha256}\n" for w in missing))
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                "--python-version", "3.11", "--platform", "manylinux2014_x86_64",
                "--implementation", "cp", "--abi", "cp311", "--require-hashes",
                "-r", str(req), "-d", tmp]
        try:
            cp = subprocess.run(argv, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"devloop input: pip download failed: {exc}") from None
        if cp.returncode != 0:
            raise RuntimeError("devloop input: pip download of the pinned wheels failed "
                               f"({cp.returncode}): {(cp.stderr or cp.stdout).strip()[-600:]}")
        for w in missing:
            got = Path(tmp) / w.filename
            if not got.is_file():
                raise RuntimeError(f"devloop input: pip did not save {w.filename}")
            shutil.move(str(got), dest / w.filename)


def fetch(mirror: str) -> Path:
    """The pinned inputs in the download cache (fetched where missing or wrong), every digest
    checked; RuntimeError naming the file otherwise."""
    d = _download_dir()
    lua = d / LUA_TARBALL
    if lua.is_file() and sha256_of(lua) != LUA_SHA256:
        lua.unlink()
    if not lua.is_file():
        _fetch_lua(lua, mirror)
    missing = []
    for w in WHEELS:
        path = d / "wheels" / w.filename
        if path.is_file() and sha256_of(path) != w.sha256:
            path.unlink()
        if not path.is_file():
            missing.append(w)
    if missing:
        _fetch_wheels(d / "wheels", missing)
    bad = mismatches(d)
    if bad:
        raise RuntimeError("devloop input does not match its pin: " + "; ".join(bad))
    return d


def install(rootfs: Path, mirror: str) -> None:
    """Copy the checked inputs into the image at IMAGE_DIR and check them there again."""
    src = fetch(mirror)
    dest = rootfs / IMAGE_DIR
    (dest / "wheels").mkdir(parents=True, exist_ok=True)
    for rel in pins():
        shutil.copyfile(src / rel, dest / rel)
    bad = mismatches(dest)
    if bad:
        raise RuntimeError("devloop input changed while copied into the image: "
                           + "; ".join(bad))
