// A load generator for the interop calculator on Mono's WCF (System.ServiceModel): closed-loop
// calls of one operation over K net.tcp channels at once, for a warm-up and then a measured
// window, the latency of every call in the window kept. Built and run by wcf-bench
// (crates/bench/src/bin/wcf-bench) as the Mono side of its comparison.
//
//   mono CalcBench.exe ADDRESS TOKEN|- --op add|reverse [--bytes N] [--channels K]
//                      [--secs D] [--warmup-secs W]
//
// NetTcpBinding(SecurityMode.None), MaxReceivedMessageSize and reader quotas 64 MiB, everything
// else default; a TOKEN (SAS) goes in a RelayAccessToken SOAP header on every call (for the
// gateway's net.tcp front end). add: Add(i, 1); reverse: ReverseBytes of an N-byte array
// (default 65536). Every answer is checked.
//
// Mono's net.tcp channel sleeps 50 ms before every receive (TcpDuplexSessionChannel.TryReceive;
// interop/recordings/FINDINGS.md §2), on the client and on the service side: that, not the
// network, bounds a Mono channel to a few dozen calls per second.
//
// Output on stdout: "begin" when the measured window opens and "end" when it closes (the
// caller samples other processes' CPU time then), then one JSON line:
//   {"op", "channels", "bytes", "calls", "secs", "p50_us", "p99_us", "mean_us", "max_us",
//    "errors", "first_error", "cpu_secs", "peak_rss_kib"}
// calls: calls that began and ended inside the window; cpu_secs: this process's CPU time in the
// window. Exit code 0 unless a call failed or a channel could not be opened.

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.ServiceModel;
using System.ServiceModel.Channels;
using System.Text;
using System.Threading;
using System.Xml;

using Ferry.Interop.Contract;

namespace Ferry.Interop.Bench
{
    class Program
    {
        const int Quota = 64 * 1024 * 1024;

        static readonly object Gate = new object();
        static readonly List<long> Ticks = new List<long>();
        static int errors;
        static string firstError;

        static int Usage(string why)
        {
            Console.Error.WriteLine("CalcBench: " + why);
            Console.Error.WriteLine("usage: CalcBench.exe ADDRESS TOKEN|- --op add|reverse [--bytes N] [--channels K] [--secs D] [--warmup-secs W]");
            return 2;
        }

        static void Line(string s)
        {
            lock (Gate)
            {
                Console.WriteLine(s);
                Console.Out.Flush();
            }
        }

        static int Main(string[] args)
        {
            var positional = new List<string>();
            string op = null;
            int bytes = 65536, channels = 1;
            double secs = 5, warmup = 1;
            for (int i = 0; i < args.Length; i++)
            {
                string a = args[i];
                if (a.StartsWith("--") && i + 1 >= args.Length) return Usage("missing value for " + a);
                switch (a)
                {
                    case "--op": op = args[++i]; break;
                    case "--bytes": bytes = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                    case "--channels": channels = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                    case "--secs": secs = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
                    case "--warmup-secs": warmup = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
                    default: positional.Add(a); break;
                }
            }
            if (positional.Count != 2) return Usage("ADDRESS and TOKEN|- are required");
            if (op != "add" && op != "reverse") return Usage("--op must be add or reverse");
            if (channels < 1 || bytes < 0 || secs <= 0 || warmup < 0) return Usage("bad numbers");
            string address = positional[0];
            string token = positional[1] == "-" ? null : positional[1];

            // Each channel has its own binding and factory, made and opened on its own thread
            // (as CalcClient.cs does for --clients): channels of one Mono binding share its
            // binary encoder, whose session dictionary state is set per message without a lock,
            // and concurrent calls on them hang. Every channel is open before the clock starts.
            var proxies = new ICalculator[channels];
            var factories = new ChannelFactory<ICalculator>[channels];
            var opened = new CountdownEvent(channels);
            var go = new ManualResetEvent(false);
            Stopwatch clock = null;
            long begin = 0, end = 0;
            var data = new byte[bytes];
            for (int i = 0; i < bytes; i++) data[i] = (byte)((i * 31 + 7) & 0xFF);
            var threads = new List<Thread>();
            for (int c = 0; c < channels; c++)
            {
                int me = c;
                var t = new Thread(() =>
                {
                    try
                    {
                        factories[me] = new ChannelFactory<ICalculator>(MakeBinding(), new EndpointAddress(address));
                        proxies[me] = factories[me].CreateChannel();
                        ((IClientChannel)proxies[me]).Open();
                        // One call as soon as the channel is open: with Mono 6.8, of channels
                        // opened before any of them called, some only ever timed out.
                        Call(proxies[me], op, data, token, 0);
                    }
                    catch (Exception e)
                    {
                        Fail(e);
                        proxies[me] = null;
                    }
                    opened.Signal();
                    go.WaitOne();
                    if (proxies[me] != null) Run(proxies[me], op, data, token, clock, begin, end);
                }) { IsBackground = true };
                t.Start();
                threads.Add(t);
            }
            // Background threads: a channel stuck in Open does not keep the process alive.
            if (!opened.Wait(TimeSpan.FromSeconds(60)))
            {
                Console.Error.WriteLine("CalcBench: channels not open within 60 s");
                Environment.Exit(1);
            }
            if (errors > 0)
            {
                Console.Error.WriteLine("CalcBench: opening a channel failed: " + firstError);
                Environment.Exit(1);
            }

            clock = Stopwatch.StartNew();
            begin = (long)(warmup * Stopwatch.Frequency);
            end = begin + (long)(secs * Stopwatch.Frequency);
            var cpu = new double[2];
            var edges = new Thread(() =>
            {
                foreach (var edge in new[] { begin, end })
                {
                    long wait = (edge - clock.ElapsedTicks) * 1000 / Stopwatch.Frequency;
                    if (wait > 0) Thread.Sleep((int)wait);
                    cpu[edge == begin ? 0 : 1] = Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;
                    Line(edge == begin ? "begin" : "end");
                }
            }) { IsBackground = true };
            edges.Start();
            go.Set();
            foreach (var t in threads) t.Join();
            edges.Join();
            foreach (var proxy in proxies)
            {
                try { ((IClientChannel)proxy).Close(); } catch (Exception) { ((IClientChannel)proxy).Abort(); }
            }
            foreach (var factory in factories)
            {
                try { factory.Close(); } catch (Exception) { factory.Abort(); }
            }

            Ticks.Sort();
            Func<int, double> pct = p =>
                Ticks.Count == 0 ? double.NaN : Us(Ticks[Math.Min(Ticks.Count * p / 100, Ticks.Count - 1)]);
            double sum = 0;
            foreach (var t in Ticks) sum += t;
            var o = new StringBuilder("{");
            Action<string, string> field = (k, v) =>
            {
                if (o.Length > 1) o.Append(", ");
                o.Append('"').Append(k).Append("\": ").Append(v);
            };
            field("op", Str(op));
            field("channels", channels.ToString(CultureInfo.InvariantCulture));
            field("bytes", (op == "reverse" ? bytes : 0).ToString(CultureInfo.InvariantCulture));
            field("calls", Ticks.Count.ToString(CultureInfo.InvariantCulture));
            field("secs", Num(secs));
            field("p50_us", Num(pct(50)));
            field("p99_us", Num(pct(99)));
            field("mean_us", Num(Ticks.Count == 0 ? double.NaN : Us(sum / Ticks.Count)));
            field("max_us", Num(Ticks.Count == 0 ? double.NaN : Us(Ticks[Ticks.Count - 1])));
            field("errors", errors.ToString(CultureInfo.InvariantCulture));
            field("first_error", firstError == null ? "null" : Str(firstError));
            field("cpu_secs", Num(cpu[1] - cpu[0]));
            field("peak_rss_kib", PeakRssKib().ToString(CultureInfo.InvariantCulture));
            o.Append('}');
            Line(o.ToString());
            return errors == 0 ? 0 : 1;
        }

        // Closed loop on one channel until the window ends; the first failure stops it.
        static void Run(ICalculator proxy, string op, byte[] data, string token, Stopwatch clock, long begin, long end)
        {
            var mine = new List<long>();
            int i = 0;
            try
            {
                while (true)
                {
                    long t0 = clock.ElapsedTicks;
                    if (t0 >= end) break;
                    Call(proxy, op, data, token, i);
                    long t1 = clock.ElapsedTicks;
                    if (t0 >= begin && t1 <= end) mine.Add(t1 - t0);
                    i++;
                }
            }
            catch (Exception e)
            {
                Fail(e);
            }
            lock (Gate) Ticks.AddRange(mine);
        }

        // One call, in a scope carrying the token when there is one; its answer checked.
        static void Call(ICalculator proxy, string op, byte[] data, string token, int i)
        {
            using (new OperationContextScope((IContextChannel)proxy))
            {
                if (token != null)
                    OperationContext.Current.OutgoingMessageHeaders.Add(new RelayTokenHeader(token));
                if (op == "add")
                {
                    int sum = proxy.Add(i, 1);
                    if (sum != unchecked(i + 1)) throw new InvalidDataException("Add(" + i + ", 1) = " + sum);
                }
                else
                {
                    var reversed = proxy.ReverseBytes(data);
                    if (reversed == null || reversed.Length != data.Length)
                        throw new InvalidDataException("ReverseBytes returned " + (reversed == null ? "null" : reversed.Length + " bytes"));
                    for (int k = 0; k < data.Length; k++)
                        if (reversed[k] != data[data.Length - 1 - k]) throw new InvalidDataException("ReverseBytes: byte " + k + " differs");
                }
            }
        }

        static void Fail(Exception e)
        {
            lock (Gate)
            {
                errors++;
                if (firstError == null) firstError = e.GetType().FullName + ": " + e.Message;
            }
        }

        static Binding MakeBinding()
        {
            var binding = new NetTcpBinding(SecurityMode.None);
            binding.MaxReceivedMessageSize = Quota;
            binding.MaxBufferSize = Quota;
            binding.ReaderQuotas = new XmlDictionaryReaderQuotas
            {
                MaxArrayLength = Quota,
                MaxStringContentLength = Quota,
                MaxBytesPerRead = Quota,
                MaxDepth = 64,
                MaxNameTableCharCount = Quota,
            };
            binding.SendTimeout = TimeSpan.FromSeconds(30);
            binding.ReceiveTimeout = TimeSpan.FromSeconds(30);
            binding.OpenTimeout = TimeSpan.FromSeconds(30);
            binding.CloseTimeout = TimeSpan.FromSeconds(10);
            return binding;
        }

        static double Us(double ticks) { return ticks * 1e6 / Stopwatch.Frequency; }

        static string Num(double v)
        {
            return double.IsNaN(v) || double.IsInfinity(v) ? "null" : v.ToString("0.###", CultureInfo.InvariantCulture);
        }

        static string Str(string s)
        {
            var sb = new StringBuilder("\"");
            foreach (var c in s)
            {
                if (c == '"' || c == '\\') sb.Append('\\').Append(c);
                else if (c < 0x20) sb.AppendFormat("\\u{0:x4}", (int)c);
                else sb.Append(c);
            }
            return sb.Append('"').ToString();
        }

        // VmHWM from /proc/self/status, KiB (0 where there is no /proc).
        static long PeakRssKib()
        {
            try
            {
                foreach (var line in File.ReadAllLines("/proc/self/status"))
                    if (line.StartsWith("VmHWM:"))
                        return long.Parse(line.Substring(6).Trim().Split(' ')[0], CultureInfo.InvariantCulture);
            }
            catch (Exception) { }
            return 0;
        }
    }
}
