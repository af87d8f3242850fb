"""Files across a channel: what the worker's uploads (:mod:`.uploads`, :mod:`.zips`) and
downloads (:mod:`.downloads`) share — limits and the flags files are opened with.

The windows, chunk checks, sizes and hashes of both directions are kept by
:mod:`sleap_rtc.protocol.transfer` (the same rules the client follows); here is
what only the worker's disk needs: a zip is extracted only inside its own folder
(no absolute paths, no ``..``, no links, no duplicate or over-long names, bounded
size and file count), and a download names a path inside the worker's mounts.

What guarantees hold:

* Ids a peer sends only key tables; every file name on disk is made here (a
  random token plus the sanitized name) and created inside the user's upload
  folder through that folder's descriptor, never by a path a link could redirect.
* A download sends only files it listed, each opened beneath its mount root
  without following links (:mod:`sleap_rtc.worker.fsafe`) and checked to be the
  same file (device and inode) that was listed and hashed.
* Every failure is a :class:`~sleap_rtc.protocol.transfer.TransferError` with a
  code and a message naming the entry (peer text cut by
  :func:`~sleap_rtc.worker.fsafe.clip`); nothing half written is left behind, and
  the channel stays open.
"""

from __future__ import annotations

import os
import zipfile

#: Files in one download and in one unpacked zip.
MAX_FILES = 1000
#: Entries (files, folders, links) looked at while listing one download.
MAX_SCANNED = 100_000
#: Uploads and downloads open at once on one channel.
MAX_UPLOADS = 4
MAX_DOWNLOADS = 4
#: Longest file name the worker makes for an upload (its ``.part`` must fit NAME_MAX).
MAX_STORED_NAME = 200
#: Longest name (bytes) of one component, and of a whole path, inside a zip.
MAX_ZIP_NAME = 255
MAX_ZIP_PATH = 1024
#: What a download reads from disk at once (then cut into chunks).
READ_BYTES = 1 << 20
#: Compression methods this worker unpacks.
ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}

DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
