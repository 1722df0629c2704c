#!/usr/bin/env python3
"""Times one corpus decoded to XML by ferry-nbfx, by PyPI `wcf` and by Mono's
XmlDictionaryReader.CreateBinaryReader, and prints the ratios. Run by hand (not in CI):

    pip install -r interop/requirements.txt      # wcf
    apt-get install -y mono-complete            # mono, mcs
    python3 interop/bench/compare.py [PASSES]

The corpus is every SizedEnvelope document of the net.tcp recordings in interop/recordings
(string table stripped, session strings passed separately), decoded repeatedly: one pass
decodes all of them. Workloads: "xml" = decode and produce XML text (ours: tree + to_xml;
wcf: Record.parse + print_records; Mono: XmlWriter.WriteNode over the binary reader),
"reader" = visit every node and value (ours: Reader; Mono: XmlReader.Read + Value).
Every child process has a hard timeout.
"""

import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REC = os.path.join(ROOT, "interop", "recordings")
TSV = os.path.join(ROOT, "crates", "nbfx", "data", "nbfs-static-dictionary.tsv")
PASSES = int(sys.argv[1]) if len(sys.argv) > 1 else 50


def mb31(b, pos):
    v = 0
    for i in range(5):
        x = b[pos]
        pos += 1
        v |= (x & 0x7F) << (7 * i)
        if not x & 0x80:
            break
    return v, pos


def corpus():
    docs = []
    for session in ["tcp-session", "tcp-oneway", "tcp-fault", "pynettcp-mex"]:
        for d in ["client_to_server.bin", "server_to_client.bin"]:
            s = open(os.path.join(REC, session, d), "rb").read()
            strings = []
            pos = 0
            while pos < len(s):
                t = s[pos]
                pos += 1
                if t == 0:
                    pos += 2
                elif t in (1, 3):
                    pos += 1
                elif t in (2, 4, 8, 9):
                    n, pos = mb31(s, pos)
                    pos += n
                elif t == 6:
                    n, pos = mb31(s, pos)
                    payload = s[pos : pos + n]
                    pos += n
                    size, p = mb31(payload, 0)
                    end = p + size
                    while p < end:
                        ln, p = mb31(payload, p)
                        strings.append(payload[p : p + ln].decode())
                        p += ln
                    docs.append({"hex": payload[end:].hex(), "session": list(strings)})
    return docs


def run(cmd, timeout, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if out.returncode != 0:
        raise SystemExit("%s failed:\n%s%s" % (" ".join(cmd), out.stdout, out.stderr))
    return out.stdout


def ours(docs_json):
    run(["cargo", "build", "--release", "-q", "-p", "ferry-nbfx", "--example", "decode"], 1800, cwd=ROOT)
    exe = os.path.join(ROOT, "target", "release", "examples", "decode")
    return json.loads(run([exe, docs_json, str(PASSES)], 600))


def python_wcf(docs):
    sys.path.insert(0, os.path.join(ROOT, "interop", "wcf_differential"))
    import decode  # noqa: E402  (the differential test's wcf wrapper, same rendering fixes)

    def one_pass():
        return sum(len(decode.decode(d)) for d in docs)

    def parse_pass():
        # Records only (the closest wcf has to a reader): session injection + Record.parse.
        n = 0
        for d in docs:
            dic = decode.wcf.dictionary.dictionary
            for i, s in enumerate(d["session"]):
                dic[2 * i + 1] = s
            n += len(decode.Record.parse(io.BytesIO(bytes.fromhex(d["hex"]))))
        return n

    result = {}
    for work, f in (("xml", one_pass), ("reader", parse_pass)):
        for _ in range(2):
            f()
        samples = []
        for _ in range(max(3, PASSES // 10)):
            start = time.perf_counter()
            f()
            samples.append(time.perf_counter() - start)
        result[work] = {"best": min(samples), "median": statistics.median(samples)}
    return result


def mono(docs, tmp):
    exe = os.path.join(tmp, "Bench.exe")
    run(["mcs", "-nologo", "-optimize+", "-r:System.Runtime.Serialization.dll", "-r:System.Xml.dll",
         "-out:" + exe, os.path.join(os.path.dirname(__file__), "Bench.cs")], 300)
    lines = os.path.join(tmp, "docs.txt")
    with open(lines, "w") as f:
        for d in docs:
            f.write(d["hex"] + "\t" + "\x1f".join(d["session"]) + "\n")
    return json.loads(run(["mono", "--optimize=all", exe, TSV, lines, str(PASSES)], 900))


def main():
    docs = corpus()
    total = sum(len(d["hex"]) // 2 for d in docs)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "docs.json")
        json.dump(docs, open(path, "w"))
        results = {"ferry-nbfx": ours(path), "PyPI wcf 0.5.5": python_wcf(docs), "Mono XmlDictionaryReader": mono(docs, tmp)}
    print("corpus: %d documents, %d bytes per pass; %d passes (wcf: %d)" % (len(docs), total, PASSES, max(3, PASSES // 10)))
    print("%-26s %-7s %12s %10s" % ("decoder", "work", "median ms", "MB/s"))
    for name, r in results.items():
        for work in ("xml", "tree-xml", "reader"):
            if work in r:
                t = r[work]["median"]
                print("%-26s %-7s %12.3f %10.1f" % (name, work, t * 1e3, total / t / 1e6))
    o = results["ferry-nbfx"]
    print("ratio xml:    ours vs wcf %.0fx, ours vs Mono %.1fx" % (
        results["PyPI wcf 0.5.5"]["xml"]["median"] / o["xml"]["median"],
        results["Mono XmlDictionaryReader"]["xml"]["median"] / o["xml"]["median"]))
    print("ratio reader: ours vs wcf %.0fx, ours vs Mono %.1fx" % (
        results["PyPI wcf 0.5.5"]["reader"]["median"] / o["reader"]["median"],
        results["Mono XmlDictionaryReader"]["reader"]["median"] / o["reader"]["median"]))


if __name__ == "__main__":
    main()
