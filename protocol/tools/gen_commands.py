#!/usr/bin/env python3
"""Generate protocol/src/commands/table.rs from a live redis-server's COMMAND / COMMAND DOCS.

The factual source is the server itself (Redis 7.0.x). Usage:

    python3 protocol/tools/gen_commands.py                 # starts its own redis-server
    python3 protocol/tools/gen_commands.py --port 16999    # uses a running one on 127.0.0.1

Only the standard library is used (a tiny RESP2 client lives below). The output is written
to protocol/src/commands/table.rs (or --out). It is deliberately formatted one entry per
line and excluded from rustfmt (`#[rustfmt::skip]` on the `mod table;` declaration).

What the server cannot tell us is spelled out here by hand:
  * KEY_RULES: how the keys of every `movablekeys` command are found (mirrors the getkeys
    procs / argument parsing of redis 7.0's db.c, t_stream.c, cluster.c, sort.c, geo.c).
    The generator fails if the server reports a movablekeys command not listed here.
  * Hidden command flags (may_replicate, sentinel, only_sentinel, protected) are not
    reported by COMMAND and therefore never set.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time

# Command flags in the order redis 7.0 prints them (server.c addReplyCommandFlags); the
# hidden ones sit at their source position but COMMAND never shows them.
FLAG_ORDER = [
    "write", "readonly", "denyoom", "module", "admin", "pubsub", "noscript", "blocking",
    "loading", "stale", "skip_monitor", "skip_slowlog", "asking", "fast", "no_auth",
    "may_replicate", "sentinel", "only_sentinel", "no_mandatory_keys", "protected",
    "no_async_loading", "no_multi", "movablekeys", "allow_busy",
]

# Key extraction for commands flagged movablekeys. Values are Rust expressions.
KEY_RULES = {
    "eval": "KeyRule::Numkeys { store: 0, numkeys_at: 2, style: NumkeysStyle::Script }",
    "evalsha": "KeyRule::Numkeys { store: 0, numkeys_at: 2, style: NumkeysStyle::Script }",
    "eval_ro": "KeyRule::Numkeys { store: 0, numkeys_at: 2, style: NumkeysStyle::Script }",
    "evalsha_ro": "KeyRule::Numkeys { store: 0, numkeys_at: 2, style: NumkeysStyle::Script }",
    "fcall": "KeyRule::Numkeys { store: 0, numkeys_at: 2, style: NumkeysStyle::Function }",
    "fcall_ro": "KeyRule::Numkeys { store: 0, numkeys_at: 2, style: NumkeysStyle::Function }",
    "zunionstore": "KeyRule::Numkeys { store: 1, numkeys_at: 2, style: NumkeysStyle::SortedSet }",
    "zinterstore": "KeyRule::Numkeys { store: 1, numkeys_at: 2, style: NumkeysStyle::SortedSet }",
    "zdiffstore": "KeyRule::Numkeys { store: 1, numkeys_at: 2, style: NumkeysStyle::SortedSet }",
    "zunion": "KeyRule::Numkeys { store: 0, numkeys_at: 1, style: NumkeysStyle::SortedSet }",
    "zinter": "KeyRule::Numkeys { store: 0, numkeys_at: 1, style: NumkeysStyle::SortedSet }",
    "zdiff": "KeyRule::Numkeys { store: 0, numkeys_at: 1, style: NumkeysStyle::SortedSet }",
    "zintercard": "KeyRule::Numkeys { store: 0, numkeys_at: 1, style: NumkeysStyle::SortedSet }",
    "sintercard": "KeyRule::Numkeys { store: 0, numkeys_at: 1, style: NumkeysStyle::SetCard }",
    "lmpop": "KeyRule::Numkeys { store: 0, numkeys_at: 1, style: NumkeysStyle::Mpop }",
    "zmpop": "KeyRule::Numkeys { store: 0, numkeys_at: 1, style: NumkeysStyle::Mpop }",
    "blmpop": "KeyRule::Numkeys { store: 0, numkeys_at: 2, style: NumkeysStyle::Mpop }",
    "bzmpop": "KeyRule::Numkeys { store: 0, numkeys_at: 2, style: NumkeysStyle::Mpop }",
    "xread": "KeyRule::Streams { group: false }",
    "xreadgroup": "KeyRule::Streams { group: true }",
    "migrate": "KeyRule::Migrate",
    "sort": "KeyRule::Sort { store: true }",
    "sort_ro": "KeyRule::Sort { store: false }",
    "georadius": "KeyRule::Georadius",
    "georadiusbymember": "KeyRule::Georadius",
}


class Resp:
    """A minimal blocking RESP2 client."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self.read()

    def read(self):
        line = self.file.readline()[:-2]
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2].decode()
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError("unexpected reply line %r" % line)


def pairs(flat):
    return dict(zip(flat[0::2], flat[1::2]))


def rs(s):
    """A Rust string literal."""
    out = ['"']
    for ch in s:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\u{%x}" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def opt(s):
    return "None" if s is None else "Some(%s)" % rs(s)


def strs(items):
    return "&[" + ", ".join(rs(x) for x in items) + "]"


def flags_expr(names, cmd):
    bits = []
    last = -1
    for f in names:
        if f not in FLAG_ORDER:
            sys.exit("unknown command flag %r on %s" % (f, cmd))
        i = FLAG_ORDER.index(f)
        if i < last:
            sys.exit("flags of %s are not in the expected order: %r" % (cmd, names))
        last = i
        bits.append("flags::" + f.upper().replace("MOVABLEKEYS", "MOVABLE_KEYS"))
    return " | ".join(bits) if bits else "0"


def key_spec_expr(ks):
    m = pairs(ks)
    bs = pairs(m["begin_search"])
    bspec = pairs(bs["spec"])
    if bs["type"] == "index":
        b = "BeginSearch::Index(%d)" % bspec["index"]
    elif bs["type"] == "keyword":
        b = "BeginSearch::Keyword { keyword: %s, startfrom: %d }" % (
            rs(bspec["keyword"]), bspec["startfrom"])
    elif bs["type"] == "unknown":
        b = "BeginSearch::Unknown"
    else:
        sys.exit("unknown begin_search %r" % bs)
    fk = pairs(m["find_keys"])
    fspec = pairs(fk["spec"])
    if fk["type"] == "range":
        f = "FindKeys::Range { lastkey: %d, keystep: %d, limit: %d }" % (
            fspec["lastkey"], fspec["keystep"], fspec["limit"])
    elif fk["type"] == "keynum":
        f = "FindKeys::Keynum { keynumidx: %d, firstkey: %d, keystep: %d }" % (
            fspec["keynumidx"], fspec["firstkey"], fspec["keystep"])
    elif fk["type"] == "unknown":
        f = "FindKeys::Unknown"
    else:
        sys.exit("unknown find_keys %r" % fk)
    expected = (["notes"] if "notes" in m else []) + ["flags", "begin_search", "find_keys"]
    if list(m.keys()) != expected:
        sys.exit("unexpected key spec fields %r" % list(m.keys()))
    return "KeySpec { notes: %s, flags: %s, begin_search: %s, find_keys: %s }" % (
        opt(m.get("notes")), strs(m["flags"]), b, f)


ARG_FIELDS = ["name", "type", "key_spec_index", "token", "summary", "since",
              "deprecated_since", "flags", "arguments"]


def arg_expr(a, indent):
    m = pairs(a)
    for k in m:
        if k not in ARG_FIELDS:
            sys.exit("unknown argument field %r" % k)
    if [k for k in ARG_FIELDS if k in m] != list(m.keys()):
        sys.exit("unexpected argument field order %r" % list(m.keys()))
    has_sub = m["type"] in ("oneof", "block")
    if has_sub != ("arguments" in m):
        sys.exit("arguments present/absent unexpectedly: %r" % a)
    sub = args_expr(m.get("arguments", []), indent + 1)
    return ("DocArg { name: %s, kind: %s, key_spec_index: %d, token: %s, summary: %s, "
            "since: %s, deprecated_since: %s, flags: %s, arguments: %s }") % (
        rs(m["name"]), rs(m["type"]), m.get("key_spec_index", -1), opt(m.get("token")),
        opt(m.get("summary")), opt(m.get("since")), opt(m.get("deprecated_since")),
        strs(m.get("flags", [])), sub)


def args_expr(args, indent):
    if not args:
        return "&[]"
    pad = "    " * (indent + 1)
    inner = ",\n".join(pad + arg_expr(a, indent + 1) for a in args)
    return "&[\n%s,\n%s]" % (inner, "    " * indent)


DOC_FIELDS = ["summary", "since", "group", "complexity", "doc_flags", "deprecated_since",
              "replaced_by", "history", "arguments", "subcommands"]


def spec_expr(info, docs, container, indent):
    name = info[0]
    (arity, flags, first, last, step, cats, tips, key_specs, subs) = info[1:10]
    d = pairs(docs)
    if [k for k in DOC_FIELDS if k in d] != list(d.keys()):
        sys.exit("unexpected docs fields for %s: %r" % (name, list(d.keys())))
    for k in ("summary", "since", "group"):
        if k not in d:
            sys.exit("%s has no %s in COMMAND DOCS" % (name, k))
    if "movablekeys" in flags:
        if name not in KEY_RULES:
            sys.exit("no key rule for movablekeys command %s: add it to KEY_RULES" % name)
        rule = KEY_RULES[name]
    elif first > 0:
        rule = "KeyRule::Range { first: %d, last: %d, step: %d }" % (first, last, step)
    else:
        rule = "KeyRule::None"
    sub_docs = pairs(d.get("subcommands", []))
    subs = sorted(subs, key=lambda s: s[0])
    if sorted(sub_docs.keys()) != [s[0] for s in subs]:
        sys.exit("subcommand docs/info mismatch for %s" % name)
    pad = "    " * (indent + 1)
    lines = [
        "name: %s," % rs(name),
        "container: %s," % rs(container),
        "arity: %d," % arity,
        "flags: %s," % flags_expr(flags, name),
        "first_key: %d, last_key: %d, step: %d," % (first, last, step),
        "acl_categories: %s," % strs(cats),
        "tips: %s," % strs(tips),
        "key_specs: %s," % ("&[]" if not key_specs else "&[\n%s,\n%s]" % (
            ",\n".join(pad + "    " + key_spec_expr(k) for k in key_specs), pad)),
        "keys: %s," % rule,
        "group: %s," % rs(d["group"]),
        "since: %s," % rs(d["since"]),
        "summary: %s," % rs(d["summary"]),
        "complexity: %s," % opt(d.get("complexity")),
        "doc_flags: %s," % strs(d.get("doc_flags", [])),
        "deprecated_since: %s," % opt(d.get("deprecated_since")),
        "replaced_by: %s," % opt(d.get("replaced_by")),
        "history: &[%s]," % ", ".join("(%s, %s)" % (rs(v), rs(t)) for v, t in d.get("history", [])),
        "arguments: %s," % args_expr(d.get("arguments", []), indent + 1),
    ]
    if subs:
        inner = ",\n".join(pad + "    " + spec_expr(s, sub_docs[s[0]], name, indent + 2)
                           for s in subs)
        lines.append("subcommands: &[\n%s,\n%s]," % (inner, pad))
    else:
        lines.append("subcommands: &[],")
    return "CommandSpec {\n%s\n%s}" % ("\n".join(pad + l for l in lines), "    " * indent)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, help="use a running redis-server on 127.0.0.1:PORT")
    ap.add_argument("--out", default=os.path.join(here, "..", "src", "commands", "table.rs"))
    opts = ap.parse_args()

    proc = None
    port = opts.port
    if port is None:
        exe = shutil.which("redis-server") or sys.exit("redis-server not found on PATH")
        port = free_port()
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no"], stdout=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
    try:
        r = Resp(port)
        version = pairs(r.cmd("hello", "2"))["version"]
        infos = sorted(r.cmd("command"), key=lambda c: c[0])
        docs = pairs(r.cmd("command", "docs"))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()

    if not version.startswith("7.0."):
        print("warning: generating from redis %s, the table is meant for 7.0" % version,
              file=sys.stderr)
    for info in infos:
        if info[0] not in docs:
            sys.exit("%s has no COMMAND DOCS entry" % info[0])
    movable = {c[0] for c in infos if "movablekeys" in c[2]}
    for extra in sorted(set(KEY_RULES) - movable):
        sys.exit("KEY_RULES lists %s but the server does not flag it movablekeys" % extra)

    body = ",\n".join("    " + spec_expr(c, docs[c[0]], "", 1) for c in infos)
    text = (
        "// @generated by protocol/tools/gen_commands.py from redis-server %s.\n"
        "// Do not edit by hand: change the generator and re-run it.\n"
        "\n"
        "use super::{flags, BeginSearch, CommandSpec, DocArg, FindKeys, KeyRule, KeySpec, NumkeysStyle};\n"
        "\n"
        "/// Version of the redis-server this table was generated from.\n"
        "pub(super) const REDIS_VERSION: &str = %s;\n"
        "\n"
        "/// Every top-level command, sorted by name; subcommands are sorted too.\n"
        "pub(super) static COMMANDS: [CommandSpec; %d] = [\n%s,\n];\n"
    ) % (version, rs(version), len(infos), body)
    with open(opts.out, "w") as f:
        f.write(text)
    nsub = sum(len(c[9]) for c in infos)
    print("wrote %s: %d commands, %d subcommands (redis %s)" % (opts.out, len(infos), nsub, version))


if __name__ == "__main__":
    main()
