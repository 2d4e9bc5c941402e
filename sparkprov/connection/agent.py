"""File operations executed on the target host.

This file is deliberately standalone (standard library only, Python >= 3.6): the local connection
calls `run_ops` in-process, runs it under `sudo python3 -c` when it must become another user, and
the SSH connection sends this same source to the remote `python3`. Requests and answers are JSON;
file contents travel base64-encoded. One call carries a batch of operations (one round trip).
"""

import base64
import errno as errno_codes
import grp
import hashlib
import json
import os
import pwd
import shutil
import stat
import sys
import tempfile
import time

TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "link"}


def _name(table, ident):
    try:
        return table(ident)[0]
    except KeyError:
        return str(ident)


def _uid(owner):
    if owner is None:
        return -1
    if isinstance(owner, int) or str(owner).isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ValueError("user '%s' does not exist on this host" % owner) from None


def _gid(group):
    if group is None:
        return -1
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError("group '%s' does not exist on this host" % group) from None


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def op_stat(path, checksum=False, follow=False):
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return {"path": path, "exists": False, "type": "absent"}
    except NotADirectoryError:
        return {"path": path, "exists": False, "type": "absent"}
    kind = TYPES.get(stat.S_IFMT(st.st_mode), "other")
    result = {
        "path": path,
        "exists": True,
        "type": kind,
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "owner": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
        "size": st.st_size,
        "mtime": st.st_mtime,
        "atime": st.st_atime,
        "ino": st.st_ino,
        "dev": st.st_dev,
    }
    if kind == "link":
        result["link_target"] = os.readlink(path)
    if checksum and kind == "file":
        result["sha256"] = sha256_file(path)
    return result


def op_read(path, max_bytes=64 << 20):
    size = os.path.getsize(path)
    if size > max_bytes:
        raise ValueError("file is %d bytes, more than the %d allowed" % (size, max_bytes))
    with open(path, "rb") as handle:
        return {"data_b64": base64.b64encode(handle.read()).decode("ascii")}


def _apply_attrs(path, mode=None, owner=None, group=None, follow=True):
    uid, gid = _uid(owner), _gid(group)
    if uid != -1 or gid != -1:
        if follow:
            os.chown(path, uid, gid)
        else:
            os.lchown(path, uid, gid)
    if mode is not None and (follow or not os.path.islink(path)):
        os.chmod(path, mode)


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _backup(path):
    stamp = time.strftime("%Y-%m-%d@%H:%M:%S")
    backup = "%s.%d.%s~" % (path, os.getpid(), stamp)
    shutil.copy2(path, backup)
    return backup


def op_write(path, data_b64, mode=None, owner=None, group=None, backup=False):
    """Atomic replace: temp file in the same directory, fsync, attributes, rename, fsync dir."""
    data = base64.b64decode(data_b64)
    directory = os.path.dirname(os.path.abspath(path))
    existing = None
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        pass
    result = {"path": path}
    if backup and existing is not None:
        result["backup_file"] = _backup(path)
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(path) + ".", suffix=".sparkprov-tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is None:
            if existing is not None:
                mode = stat.S_IMODE(existing.st_mode)
            else:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
        if existing is not None:
            owner = existing.st_uid if owner is None else owner
            group = existing.st_gid if group is None else group
        _apply_attrs(tmp, mode, owner, group)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return result


def op_mkdir(path, mode=None, owner=None, group=None):
    """mkdir -p; mode/owner/group apply to every directory this call creates (as Ansible does)."""
    created = []
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        created.append(current)
        current = os.path.dirname(current)
    made = []
    for directory in reversed(created):
        try:
            os.mkdir(directory)
        except FileExistsError:  # another process (a host sharing this filesystem) made it first
            if not os.path.isdir(directory):
                raise
            continue
        made.append(directory)
        _apply_attrs(directory, mode, owner, group)
    created = list(reversed(made))
    if not created:
        if not os.path.isdir(path):
            raise ValueError("exists and is not a directory")
        _apply_attrs(path, mode, owner, group)
    return {"path": path, "created": created}


def op_remove(path):
    if os.path.islink(path) or not os.path.isdir(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            return {"path": path, "removed": False}
    else:
        shutil.rmtree(path)
    return {"path": path, "removed": True}


def op_attrs(path, mode=None, owner=None, group=None, follow=True):
    _apply_attrs(path, mode, owner, group, follow)
    return {"path": path}


def op_walk(path, max_entries=200000):
    """lstat of everything below `path` (not following links), for recursive attribute checks."""
    entries = []
    for top, dirs, files in os.walk(path):
        for name in sorted(dirs) + sorted(files):
            entries.append(op_stat(os.path.join(top, name)))
            if len(entries) > max_entries:
                raise ValueError("more than %d entries below %s" % (max_entries, path))
    return {"path": path, "entries": entries}


def op_identity():
    """Who file operations run as, and the umask new files get."""
    umask = os.umask(0)
    os.umask(umask)
    uid, gid = os.geteuid(), os.getegid()
    user, group = _name(pwd.getpwuid, uid), _name(grp.getgrgid, gid)
    return {"umask": umask, "uid": uid, "gid": gid, "user": user, "group": group}


def op_link(path, src, hard=False, force=False):
    """Create or replace a link atomically (make it under a temp name, then rename over)."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, ".%s.%d.sparkprov-tmp" % (os.path.basename(path), os.getpid()))
    if os.path.isdir(path) and not os.path.islink(path):
        if not force or os.listdir(path):
            raise ValueError("refusing to replace directory with a link (use force on an empty directory)")
        os.rmdir(path)
    if hard:
        os.link(src, tmp)
    else:
        os.symlink(src, tmp)
    os.rename(tmp, path)
    return {"path": path, "src": src}


def op_touch(path, mode=None, owner=None, group=None, mtime=None, atime=None):
    if not os.path.lexists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
        os.close(fd)
    _apply_attrs(path, mode, owner, group)
    now = time.time()
    if mtime is not None or atime is not None:
        current = os.stat(path)
        os.utime(
            path,
            (
                current.st_atime if atime == "preserve" else (atime or now),
                current.st_mtime if mtime == "preserve" else (mtime or now),
            ),
        )
    else:
        os.utime(path, None)
    return {"path": path}


OPS = {
    "stat": op_stat,
    "read": op_read,
    "write": op_write,
    "mkdir": op_mkdir,
    "remove": op_remove,
    "attrs": op_attrs,
    "link": op_link,
    "touch": op_touch,
    "walk": op_walk,
    "identity": op_identity,
}


def run_op(request):
    request = dict(request)
    name = request.pop("op")
    if "path" in request:
        request["path"] = os.path.expanduser(request["path"])  # '~' means the (become) user's home
    try:
        return OPS[name](**request)  # type: ignore[operator]
    except OSError as exc:
        message = exc.strerror or str(exc)
        if exc.errno == errno_codes.ENOSPC:
            message = "no space left on device (the previous file, if any, was left intact)"
        return {"error": message, "errno": exc.errno}
    except (ValueError, TypeError) as exc:
        return {"error": str(exc)}


def run_ops(requests):
    return [run_op(r) for r in requests]


def main():
    requests = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    sys.stdout.write(json.dumps(run_ops(requests)))


if __name__ == "__main__":
    main()
