"""A logdir, its runs and their event files: a local folder, or any fsspec URL (gs://, s3://…).

Runs are found and named as TensorBoard finds and names them: a run is a folder (the logdir
itself is run ``"."``) that holds event files, files with ``tfevents`` in their name; nested
runs are named by their path below the logdir with ``/``.

A local path is read with ``os`` calls (the fast path): symbolic links are followed, a folder
reached twice is read once, and a file that is not a regular file (a FIFO, a socket, a device)
is refused when opened, before it could block. A URL with a scheme is read through fsspec,
which takes storage options from each backend's usual configuration (for ``s3://``: the
``AWS_*`` variables, ``~/.aws``; for ``gs://``: ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's
login, ``STORAGE_EMULATOR_HOST``); see docs/storage.md. One listing request finds every run,
and the object sizes it returns let a reader skip, with no request at all, a file that has not
grown.
"""

from __future__ import annotations

import os
import posixpath
import stat
from typing import Any, BinaryIO

from tbkit.data.errors import TbkitError

#: Bytes fetched per ranged request from object storage.
REMOTE_BLOCK = 8 << 20

_BACKENDS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"),
             "gcs": ("gcsfs", "gcs")}  # fmt: skip
_CREDENTIALS = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or run "
          "`aws configure`",
    "gs": "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS",
}  # fmt: skip


class StorageError(TbkitError, OSError):
    """A logdir URL that cannot be listed or read: the message names the URL and what to do."""


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def explain(url: str, action: str, error: BaseException) -> StorageError:
    """One line for a backend's error: credentials, permission, or what the backend said."""
    scheme = _scheme(url)
    kind = type(error).__name__
    if kind in ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError",
                "RefreshError") and scheme in ("s3", "s3a", "gs", "gcs"):  # fmt: skip
        hint = _CREDENTIALS["s3" if scheme.startswith("s3") else "gs"]
        return StorageError(f"cannot {action} {url}: no credentials found; {hint}")
    text = " ".join(str(error).split()) or kind  # a backend's message may span lines
    anonymous = scheme in ("gs", "gcs") and any(
        word in text for word in ("401", "403", "Forbidden", "Anonymous", "Unauthorized"))
    hint = f"; if it needs credentials: {_CREDENTIALS['gs']}" if anonymous else ""
    if isinstance(error, PermissionError):
        return StorageError(f"cannot {action} {url}: permission denied ({text}){hint}")
    return StorageError(f"cannot {action} {url}: {text}{hint}")


def _filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system and the path in it for ``url``."""
    try:
        import fsspec
    except ImportError as e:  # pragma: no cover (a dependency of tbkit)
        raise StorageError(f"reading {url} needs fsspec: pip install fsspec") from e
    try:
        # A new instance: storage options are read from the environment as it is now.
        return fsspec.core.url_to_fs(url, skip_instance_cache=True)
    except ImportError as e:
        package, extra = _BACKENDS.get(_scheme(url), (None, None))
        if package is None:
            raise StorageError(f"reading {url} needs an fsspec backend for "
                               f"{_scheme(url)}://: {e}") from e  # fmt: skip
        raise StorageError(f'reading {url} needs {package}: pip install "tbkit[{extra}]"') from e
    except ValueError as e:  # an unknown protocol
        raise StorageError(f"cannot read {url}: {e}") from e


def as_text(name: str) -> str:
    """A folder name as text: bytes that are not UTF-8 (which ``os.fsdecode`` keeps as lone
    surrogates, which no UTF-8 output can hold) written as ``\\xNN``, as Python shows them."""
    if name.isascii():
        return name
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory"}  # fmt: skip


class Logdir:
    """Where TensorBoard would be pointed: a local folder or an fsspec URL.

    Args:
        location: a path (str or os.PathLike), ``file://…``, or a URL such as ``s3://b/exp``.
    """

    def __init__(self, location: str | os.PathLike[str]):
        self.url = os.fspath(location)
        scheme = _scheme(self.url)
        self.remote = scheme not in ("", "file")
        self.fs: Any = None
        self.root = self.url[len("file://") :] if scheme == "file" else self.url
        self._sizes: dict[str, int] = {}  # object sizes from the last remote listing
        if self.remote:
            self.fs, self.root = _filesystem(self.url)
            self.root = self.root.rstrip("/")

    def __repr__(self) -> str:
        return f"Logdir({self.url!r})"

    def show(self, path: str) -> str:
        """How messages name one of its files: the path, or the URL of an object."""
        return self.fs.unstrip_protocol(path) if self.remote else path

    def check(self) -> Logdir:
        """Make sure the logdir is there (a folder, or a prefix that holds objects).

        Raises:
            FileNotFoundError: it does not exist.
            NotADirectoryError: it is a file.
            StorageError: a URL that cannot be listed (network, permission, credentials).
        """
        if not self.remote:
            if not os.path.isdir(self.root):
                if os.path.exists(self.root):
                    raise NotADirectoryError(f"logdir {self.url!r} is not a directory")
                raise FileNotFoundError(f"logdir {self.url!r} does not exist")
            return self
        try:
            found = self.fs.isdir(self.root)
            is_file = not found and self.fs.isfile(self.root)
        except FileNotFoundError:
            found = is_file = False
        except Exception as e:  # each backend raises its own errors
            raise explain(self.url, "list", e) from e
        if is_file:
            raise NotADirectoryError(f"logdir {self.url!r} is not a directory")
        if not found:
            raise FileNotFoundError(f"logdir {self.url!r} does not exist")
        return self

    def runs(self) -> list[tuple[str, list[str]]]:
        """The runs as sorted ``(name, sorted event file paths)`` pairs.

        Raises:
            StorageError: a URL that cannot be listed.
        """
        return self._remote_runs() if self.remote else self._local_runs()

    def _local_runs(self) -> list[tuple[str, list[str]]]:
        found, seen = [], set()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            try:
                info = os.stat(dirpath)
            except OSError:
                dirnames.clear()
                continue
            if (key := (info.st_dev, info.st_ino)) in seen:  # a loop of symbolic links
                dirnames.clear()
                continue
            seen.add(key)
            dirnames.sort()
            names = sorted(name for name in filenames if "tfevents" in name)
            if names:
                run = as_text(os.path.relpath(dirpath, self.root).replace(os.sep, "/"))
                found.append((run, [os.path.join(dirpath, name) for name in names]))
        return sorted(found)

    def _remote_runs(self) -> list[tuple[str, list[str]]]:
        self.fs.invalidate_cache(self.root)  # a listing must see what was written since
        try:
            listing = self.fs.find(self.root, detail=True)
        except FileNotFoundError as e:  # a prefix with nothing under it is {}: the bucket is gone
            raise StorageError(f"cannot list {self.url}: its bucket does not exist") from e
        except Exception as e:
            raise explain(self.url, "list", e) from e
        if set(listing) == {self.root}:  # the logdir is itself an object
            return []
        runs: dict[str, list[str]] = {}
        self._sizes = {}
        for path, info in listing.items():
            if info.get("type", "file") != "file" or "tfevents" not in posixpath.basename(path):
                continue
            folder = posixpath.dirname(path)
            run = posixpath.relpath(folder, self.root) if folder != self.root else "."
            runs.setdefault(run, []).append(path)
            self._sizes[path] = int(info.get("size") or 0)
        return sorted((run, sorted(paths)) for run, paths in runs.items())

    def listed_size(self, path: str) -> int | None:
        """An object's size at the last listing (None for a local file: ask the file)."""
        return self._sizes.get(path) if self.remote else None

    def size(self, path: str) -> int:
        """A file's size now (an object's at the last listing); 0 if it is gone."""
        if self.remote:
            return self._sizes.get(path, 0)
        try:
            return os.stat(path).st_size
        except OSError:
            return 0

    def open(self, path: str) -> BinaryIO:
        """One event file, opened for reading.

        Raises:
            OSError: it cannot be read, or (locally) is not a regular file.
        """
        if self.remote:
            try:
                return self.fs.open(path, "rb", block_size=REMOTE_BLOCK, cache_type="readahead",
                                    size=self._sizes.get(path))  # fmt: skip
            except OSError:
                raise
            except Exception as e:
                raise explain(self.show(path), "read", e) from e
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            if os.path.islink(path):
                raise OSError(f"a symbolic link to nothing ({os.readlink(path)})") from None
            raise
        if not stat.S_ISREG(mode):
            raise OSError(f"not a regular file ({_KINDS.get(stat.S_IFMT(mode), 'special file')})")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO never blocks
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the stat
            os.close(fd)
            raise OSError("not a regular file")
        return os.fdopen(fd, "rb")


    # Writing (exports).

    def exists_with_files(self) -> bool:
        """Whether the location holds any file (an output folder that is not new or empty)."""
        if self.remote:
            try:
                return bool(self.fs.find(self.root, maxdepth=None))
            except FileNotFoundError:
                return False
            except Exception as e:
                raise explain(self.url, "list", e) from e
        if os.path.isfile(self.root):
            return True
        return any(files for _, _, files in os.walk(self.root))

    def create(self, path: str) -> BinaryIO:
        """A new file at ``path`` (below this location), its folders made as needed."""
        if self.remote:
            try:
                return self.fs.open(path, "wb")
            except Exception as e:
                raise explain(self.fs.unstrip_protocol(path), "write", e) from e
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return open(path, "wb")  # noqa: SIM115 (the caller closes it)


    def discard(self, file: BinaryIO) -> None:
        """Drop a file being written by :meth:`create` (an object is never uploaded)."""
        if self.remote and hasattr(file, "discard"):
            file.discard()
            return
        file.close()
        if self.remote:
            self.fs.rm(file.path)
        else:
            os.remove(file.name)


#: The source of event files given by path alone (local files).
LOCAL = Logdir(".")
