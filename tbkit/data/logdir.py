"""A logdir's runs and their event files, found and named as TensorBoard finds and names them.

A run is a folder (the logdir itself is run ``"."``) that holds event files: files with
``tfevents`` in their name. Nested runs are named by their path below the logdir with ``/``.
Symbolic links are followed, and a folder reached twice is read once.
"""

from __future__ import annotations

import os


def check(logdir: str | os.PathLike[str]) -> str:
    """``logdir`` as a str, after checking that it is a directory.

    Raises:
        FileNotFoundError: it does not exist.
        NotADirectoryError: it is not a directory.
    """
    root = os.fspath(logdir)
    if not os.path.isdir(root):
        if os.path.exists(root):
            raise NotADirectoryError(f"logdir {root!r} is not a directory")
        raise FileNotFoundError(f"logdir {root!r} does not exist")
    return root


def runs(logdir: str) -> list[tuple[str, list[str]]]:
    """The runs under ``logdir`` as sorted ``(name, sorted event file paths)`` pairs."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(logdir, followlinks=True):
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
            run = os.path.relpath(dirpath, logdir).replace(os.sep, "/")
            found.append((run, [os.path.join(dirpath, name) for name in names]))
    return sorted(found)


def size(path: str) -> int:
    """An event file's size in bytes now; 0 if it is gone."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
