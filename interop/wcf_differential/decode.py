"""Decode MC-NBFX documents with the independent PyPI package `wcf` (python-wcfbin fork).

Used by the Rust differential test `crates/nbfx/tests/wcf_differential.rs`:
stdin is a JSON list of {"hex": document bytes, "session": [session strings, id 1, 3, 5, ...]};
stdout is a JSON list of {"xml": text} or {"error": message}, one per input.

`wcf` has no MC-NMF framing and no MC-NBFSE string table, so the session strings are injected
at their odd ids into its global dictionary, as the recording decoder did. Its text output is
adjusted where it is not XML or not .NET's format (see recordings/FINDINGS.md section 6):
HTML entities instead of XML escaping, `NAN`, `True`, an EmptyText repr, DateTime without its
kind and truncated to microseconds, unescaped UTF-16 text. Structure, names, prefixes and
values are wcf's own.
"""

import decimal
import io
import json
import struct
import logging
import sys

try:
    import wcf.dictionary
    import wcf.records
    import wcf.records.attributes
    import wcf.records.elements
    import wcf.records.text as T
    from wcf.records.base import Record
except ImportError as e:  # the Rust side turns this into a clear failure
    sys.stderr.write("python module 'wcf' is missing: pip install -r interop/requirements.txt (%s)\n" % e)
    sys.exit(3)

logging.disable(logging.CRITICAL)


def xml_escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


T.escape = xml_escape
T.UnicodeChars8TextRecord.__str__ = lambda self: xml_escape(self.value)
T.BoolTextRecord.__str__ = lambda self: "true" if self.value else "false"
T.EmptyTextRecord.__str__ = lambda self: ""


def _dotnet_number(v, shortest, precision):
    """XmlConvert's layout: shortest round-trip digits, E+XX outside 1e-5 <= |v| < 10^precision."""
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "INF" if v > 0 else "-INF"
    sign, digits, exp = decimal.Decimal(shortest).as_tuple()
    digits = "".join(map(str, digits)).rstrip("0") or "0"
    neg = "-" if sign else ""
    if digits == "0":
        return neg + "0"
    # value = 0.d1d2... * 10^(point); sci exponent = point - 1
    point = len("".join(map(str, decimal.Decimal(shortest).as_tuple()[1]))) + exp
    sci = point - 1
    if sci >= precision or sci < -4:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return "%s%sE%s%02d" % (neg, mant, "-" if sci < 0 else "+", abs(sci))
    if sci < 0:
        return neg + "0." + "0" * (-sci - 1) + digits
    if len(digits) <= point:
        return neg + digits + "0" * (point - len(digits))
    return neg + digits[:point] + "." + digits[point:]


def _shortest_f32(v):
    # Shortest digits that round-trip; exact ties round half up, as Rust's and .NET's
    # shortest formatting do.
    for p in range(1, 10):
        s = str(decimal.Context(prec=p, rounding=decimal.ROUND_HALF_UP).create_decimal(v))
        if struct.unpack("<f", struct.pack("<f", float(s)))[0] == v:
            return s
    return repr(v)


T.FloatTextRecord.__str__ = lambda self: _dotnet_number(self.value, _shortest_f32(self.value) if self.value == self.value and abs(self.value) != float("inf") else "0", 7)
T.DoubleTextRecord.__str__ = lambda self: _dotnet_number(self.value, repr(self.value) if self.value == self.value and abs(self.value) != float("inf") else "0", 15)


def _datetime(self):
    ticks = self.value
    days, rem = divmod(ticks, 864000000000)
    import datetime

    date = datetime.date(1, 1, 1) + datetime.timedelta(days=days)
    secs, frac = divmod(rem, 10000000)
    text = "%04d-%02d-%02dT%02d:%02d:%02d" % (date.year, date.month, date.day, secs // 3600, secs // 60 % 60, secs % 60)
    if frac:
        text += "." + ("%07d" % frac).rstrip("0")
    return text + {0: "", 1: "Z", 2: "+00:00"}.get(self.tz, "")


T.DatetimeTextRecord.__str__ = _datetime

STATIC = {k: v for k, v in wcf.dictionary.dictionary.items() if k % 2 == 0}


def decode(doc):
    d = wcf.dictionary.dictionary
    for k in [k for k in d if k % 2 == 1]:
        del d[k]
    for i, s in enumerate(doc.get("session", [])):
        d[2 * i + 1] = s
    records = Record.parse(io.BytesIO(bytes.fromhex(doc["hex"])))
    out = io.StringIO()
    wcf.records.print_records(records, fp=out)
    return out.getvalue()


def main():
    docs = json.load(sys.stdin)
    results = []
    for doc in docs:
        try:
            results.append({"xml": decode(doc)})
        except Exception as e:  # report per document; the Rust side decides
            results.append({"error": "%s: %s" % (type(e).__name__, e)})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
