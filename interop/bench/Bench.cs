// Mono's binary XML reader on the same documents: XmlDictionaryReader.CreateBinaryReader with
// the MC-NBFS static dictionary and a per-document XmlBinaryReaderSession.
// Built and run by compare.py: mcs -r:System.Runtime.Serialization.dll -r:System.Xml.dll Bench.cs
// Usage: mono Bench.exe DICTIONARY.tsv DOCS.txt PASSES  (DOCS.txt: hex TAB session strings
// separated by U+001F, one document per line). Prints {"xml": {...}, "reader": {...}} seconds.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Text;
using System.Xml;

class Bench
{
    static byte[] Hex(string s)
    {
        var b = new byte[s.Length / 2];
        for (int i = 0; i < b.Length; i++) b[i] = Convert.ToByte(s.Substring(2 * i, 2), 16);
        return b;
    }

    static void Main(string[] args)
    {
        var dict = new XmlDictionary();
        foreach (var line in File.ReadAllLines(args[0]))
            dict.Add(line.Substring(line.IndexOf('\t') + 1));
        var docs = new List<byte[]>();
        var sessions = new List<XmlBinaryReaderSession>();
        foreach (var line in File.ReadAllLines(args[1]))
        {
            var parts = line.Split('\t');
            docs.Add(Hex(parts[0]));
            var session = new XmlBinaryReaderSession();
            if (parts.Length > 1 && parts[1].Length > 0)
            {
                var strings = parts[1].Split('\u001f');
                for (int i = 0; i < strings.Length; i++) session.Add(i, strings[i]);
            }
            sessions.Add(session);
        }
        int passes = int.Parse(args[2]);
        var quotas = XmlDictionaryReaderQuotas.Max;
        Func<long> toXml = () => {
            long n = 0;
            for (int i = 0; i < docs.Count; i++)
            {
                var reader = XmlDictionaryReader.CreateBinaryReader(docs[i], 0, docs[i].Length, dict, quotas, sessions[i]);
                var sw = new StringWriter();
                using (var w = XmlWriter.Create(sw, new XmlWriterSettings { OmitXmlDeclaration = true }))
                    w.WriteNode(reader, true);
                n += sw.ToString().Length;
            }
            return n;
        };
        Func<long> walk = () => {
            long n = 0;
            for (int i = 0; i < docs.Count; i++)
            {
                var reader = XmlDictionaryReader.CreateBinaryReader(docs[i], 0, docs[i].Length, dict, quotas, sessions[i]);
                while (reader.Read())
                {
                    n++;
                    if (reader.HasValue) n += reader.Value.Length;
                    if (reader.MoveToFirstAttribute()) do { n += reader.Value.Length; } while (reader.MoveToNextAttribute());
                }
            }
            return n;
        };
        Console.WriteLine("{{\"xml\": {0}, \"reader\": {1}}}", Time(toXml, passes), Time(walk, passes));
    }

    static string Time(Func<long> f, int passes)
    {
        var samples = new List<double>();
        for (int p = 0; p < passes + 3; p++)
        {
            var sw = Stopwatch.StartNew();
            f();
            sw.Stop();
            if (p >= 3) samples.Add(sw.Elapsed.TotalSeconds);
        }
        samples.Sort();
        return string.Format(System.Globalization.CultureInfo.InvariantCulture,
            "{{\"best\": {0}, \"median\": {1}}}", samples[0], samples[samples.Count / 2]);
    }
}
