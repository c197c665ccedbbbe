"""Output files: check an image path before the work, write it atomically after.

Sampling can take minutes, so the command-line tools check where their output goes *before*
they sample (:func:`check_image_path`, :func:`check_output_folder`), and write every file
through :func:`atomic_path`: the data go to a temporary file in the destination's own folder,
which is flushed to disk and then renamed over the destination (``os.replace``, atomic on
POSIX and Windows). A write that fails half-way (a full disk, an encoder error, Ctrl-C) leaves
the previous file untouched and no temporary file behind.

Example::

    from pint_diffusion.files import atomic_path, check_image_path, save_image

    path = check_image_path("out/grid.png", mode="L")  # before sampling
    ...
    save_image(pil_image, path)                         # after sampling
    with atomic_path("out/figure.png") as tmp:          # any writer that takes a path
        figure.savefig(tmp)
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # PIL is imported lazily
    from PIL.Image import Image

__all__ = ["atomic_path", "check_image_path", "check_output_folder", "image_format", "save_image"]

#: Extensions suggested in error messages (any extension PIL can write is accepted).
COMMON_EXTENSIONS = (".png", ".jpg", ".webp", ".tif", ".bmp")


def image_format(path: str | os.PathLike[str]) -> str:
    """The PIL format name (``"PNG"``, ``"JPEG"``, ...) that writes ``path``'s extension.

    Raises:
        ValueError: the path has no extension, or one that no installed PIL plugin can write
            (the message lists common ones).
    """
    from PIL import Image

    Image.init()
    path = Path(path)
    suffix = path.suffix.lower()
    hint = ", ".join(COMMON_EXTENSIONS)
    if not suffix:
        raise ValueError(f"output path {str(path)!r} has no file extension; give an image file "
                         f"name with one of {hint}")
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"output path {str(path)!r}: {suffix!r} is not an image type PIL can "
                         f"write; use one of {hint}")
    return fmt


def _probe_folder(folder: Path, what: str) -> None:
    """Raise ValueError unless ``folder`` is an existing folder we can create files in."""
    if not folder.exists():
        raise ValueError(f"{what}: folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise ValueError(f"{what}: {str(folder)!r} is a file, not a folder")
    try:  # a real probe: os.access is wrong for root, ACLs and read-only mounts
        with tempfile.TemporaryFile(dir=folder, prefix=".pint-write-test-"):
            pass
    except OSError as exc:
        raise ValueError(f"{what}: cannot write in folder {str(folder)!r} "
                         f"({exc.strerror or exc})") from exc


def _existing_ancestor(folder: Path) -> Path:
    """The nearest of ``folder`` and its parents that exists (as anything)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()  # pragma: no cover - "/" or "." always exists


def _make_folder(folder: Path, what: str) -> None:
    """Create ``folder`` (and its parents) after checking that nothing in the way is a file."""
    ancestor = _existing_ancestor(folder)
    if not ancestor.is_dir():
        raise ValueError(f"{what}: {str(ancestor)!r} is a file, not a folder")
    if ancestor != folder:
        _probe_folder(ancestor, what)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{what}: cannot create folder {str(folder)!r} "
                             f"({exc.strerror or exc})") from exc
    _probe_folder(folder, what)


def check_image_path(path: str | os.PathLike[str], mode: str = "RGB") -> Path:
    """Check, before any work, that an image of PIL ``mode`` can be written at ``path``.

    Checks that ``path`` is not a folder (nor anything but a regular file, if it exists), that
    its extension is an image type PIL can write in ``mode`` (a small image is encoded in
    memory to make sure), and that its folder is a folder we can create files in; missing
    folders are created (their nearest existing parent must be a writable folder).

    Args:
        path: The image file to write.
        mode: The PIL mode of the image that will be written (``"L"``, ``"RGB"``, ...).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        ValueError: naming the path and what is wrong with it.
    """
    from PIL import Image

    path = Path(path)
    what = f"output path {str(path)!r}"
    if path.is_dir():
        raise ValueError(f"{what} is a folder; give an image file name such as "
                         f"{str(path / 'samples.png')!r}")
    if path.exists() and not path.is_file():
        raise ValueError(f"{what} exists and is not a regular file")
    fmt = image_format(path)
    try:
        Image.new(mode, (16, 16)).save(io.BytesIO(), format=fmt)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{what}: PIL cannot write a mode-{mode} image as {fmt} ({exc}); use one "
                         f"of {', '.join(COMMON_EXTENSIONS)}") from exc
    _make_folder(path.parent, what)
    return path


def check_output_folder(path: str | os.PathLike[str]) -> Path:
    """Check (and create if missing) a folder that files will be written into.

    Raises:
        ValueError: ``path`` or one of its parents is a file, or the folder is not writable.
    """
    path = Path(path)
    _make_folder(path, f"output folder {str(path)!r}")
    return path


def _default_mode() -> int:
    mask = os.umask(0o022)  # the only portable way to read the umask is to set it
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write ``path``'s new contents to; renamed over ``path`` on success.

    The temporary file lies in ``path``'s folder (so the rename is atomic: same file system)
    and has the same extension (so writers that pick the format from the name, such as PIL's
    ``Image.save`` and matplotlib's ``savefig``, pick the right one). When the ``with`` block
    ends normally, the file is flushed to disk, given the permissions a new file would get
    (those of the file it replaces, if any) and renamed over ``path``. When the block raises,
    the temporary file is removed, ``path`` is left as it was and the exception propagates.

    Example::

        with atomic_path("grid.png") as tmp:
            image.save(tmp)
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = _default_mode()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def save_image(image: Image, path: str | os.PathLike[str]) -> Path:
    """Write a PIL image to ``path`` atomically (see :func:`atomic_path`), in the format its
    extension names; returns ``path``."""
    path = Path(path)
    fmt = image_format(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)
    return path
