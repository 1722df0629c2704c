// A WCF client of the interop calculator on Mono's System.ServiceModel: calls every operation of
// ICalculator and prints one JSON line per call, in the shape of interop/recordings/*/calls.json
// ({"seq", "op", "one_way", "args", "outcome": "result"/"fault"/"exception"/"sent", ...}), so that
// a Rust test can assert on what a real WCF client saw.
//
//   mono CalcClient.exe nettcp|basic ADDRESS [TOKEN|-] [--clients N]
//
// nettcp: NetTcpBinding(SecurityMode.None), ADDRESS net.tcp://host:port/path; a TOKEN (SAS) goes in
// a RelayAccessToken SOAP header on every message. basic: BasicHttpBinding, ADDRESS
// http://host:port/path; a TOKEN goes in the ServiceBusAuthorization HTTP header. Both bindings:
// MaxReceivedMessageSize and reader quotas 64 MiB, everything else default.
//
// --clients N runs N clients at once, each on its own channel (its lines carry "client": i and
// its Notify messages end in " #i"). After the last client it prints {"done": true}.

using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.Runtime.Serialization;
using System.Security.Cryptography;
using System.ServiceModel;
using System.ServiceModel.Channels;
using System.Text;
using System.Threading;
using System.Xml;

using Ferry.Interop.Contract;

namespace Ferry.Interop.Client
{
    // An ordered JSON object.
    class J : List<KeyValuePair<string, object>>
    {
        public J Add(string key, object value)
        {
            Add(new KeyValuePair<string, object>(key, value));
            return this;
        }
    }

    static class Json
    {
        public static string Write(object v)
        {
            var sb = new StringBuilder();
            Value(sb, v);
            return sb.ToString();
        }

        static void Value(StringBuilder sb, object v)
        {
            if (v == null) { sb.Append("null"); return; }
            if (v is string) { Str(sb, (string)v); return; }
            if (v is bool) { sb.Append((bool)v ? "true" : "false"); return; }
            if (v is int || v is long) { sb.Append(Convert.ToString(v, CultureInfo.InvariantCulture)); return; }
            if (v is double)
            {
                var d = (double)v;
                if (double.IsNaN(d)) Str(sb, "NaN");
                else if (double.IsPositiveInfinity(d)) Str(sb, "Infinity");
                else if (double.IsNegativeInfinity(d)) Str(sb, "-Infinity");
                else sb.Append(d.ToString("R", CultureInfo.InvariantCulture));
                return;
            }
            if (v is decimal) { Value(sb, new J().Add("$decimal", ((decimal)v).ToString(CultureInfo.InvariantCulture))); return; }
            if (v is Guid) { Value(sb, new J().Add("$guid", v.ToString())); return; }
            if (v is DateTime)
            {
                var t = (DateTime)v;
                Value(sb, new J().Add("$datetime", t.ToString("yyyy-MM-ddTHH:mm:ss.fffffff", CultureInfo.InvariantCulture)).Add("kind", t.Kind.ToString()));
                return;
            }
            if (v is byte[]) { Value(sb, new J().Add("$bytes", Bytes((byte[])v))); return; }
            if (v is J)
            {
                sb.Append('{');
                var first = true;
                foreach (var kv in (J)v)
                {
                    if (!first) sb.Append(", ");
                    first = false;
                    Str(sb, kv.Key);
                    sb.Append(": ");
                    Value(sb, kv.Value);
                }
                sb.Append('}');
                return;
            }
            if (v is IEnumerable)
            {
                sb.Append('[');
                var first = true;
                foreach (var item in (IEnumerable)v)
                {
                    if (!first) sb.Append(", ");
                    first = false;
                    Value(sb, item);
                }
                sb.Append(']');
                return;
            }
            Str(sb, v.ToString());
        }

        static J Bytes(byte[] b)
        {
            string hash;
            using (var sha = SHA256.Create())
                hash = BitConverter.ToString(sha.ComputeHash(b)).Replace("-", "").ToLowerInvariant();
            var o = new J().Add("len", b.Length).Add("sha256", hash);
            if (b.Length <= 256) o.Add("base64", Convert.ToBase64String(b));
            return o;
        }

        static void Str(StringBuilder sb, string s)
        {
            sb.Append('"');
            foreach (var c in s)
            {
                switch (c)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    default:
                        if (c < 0x20) sb.AppendFormat("\\u{0:x4}", (int)c);
                        else sb.Append(c);
                        break;
                }
            }
            sb.Append('"');
        }
    }

    class Program
    {
        const int Quota = 64 * 1024 * 1024;
        static readonly object OutputLock = new object();

        static int Main(string[] args)
        {
            Console.OutputEncoding = new UTF8Encoding(false);
            var positional = new List<string>();
            int clients = 1;
            for (int i = 0; i < args.Length; i++)
            {
                if (args[i] == "--clients" && i + 1 < args.Length) clients = int.Parse(args[++i]);
                else positional.Add(args[i]);
            }
            if (positional.Count < 2 || (positional[0] != "nettcp" && positional[0] != "basic"))
            {
                Console.Error.WriteLine("usage: CalcClient.exe nettcp|basic ADDRESS [TOKEN|-] [--clients N]");
                return 2;
            }
            string kind = positional[0], address = positional[1];
            string token = positional.Count > 2 && positional[2] != "-" ? positional[2] : null;

            var failures = 0;
            var threads = new List<Thread>();
            for (int i = 0; i < clients; i++)
            {
                int id = i;
                var t = new Thread(() =>
                {
                    try { new Session(kind, address, token, clients > 1 ? (int?)id : null).Run(); }
                    catch (Exception e)
                    {
                        Interlocked.Increment(ref failures);
                        Print(new J().Add("client", id).Add("error", e.GetType().FullName + ": " + e.Message));
                    }
                });
                t.Start();
                threads.Add(t);
            }
            foreach (var t in threads) t.Join();
            Print(new J().Add("done", true));
            return failures == 0 ? 0 : 1;
        }

        public static void Print(J line)
        {
            lock (OutputLock)
            {
                Console.WriteLine(Json.Write(line));
                Console.Out.Flush();
            }
        }

        public static Binding MakeBinding(string kind)
        {
            var quotas = new XmlDictionaryReaderQuotas
            {
                MaxArrayLength = Quota,
                MaxStringContentLength = Quota,
                MaxBytesPerRead = Quota,
                MaxDepth = 64,
                MaxNameTableCharCount = Quota,
            };
            if (kind == "nettcp")
            {
                var b = new NetTcpBinding(SecurityMode.None);
                b.MaxReceivedMessageSize = Quota;
                b.MaxBufferSize = Quota;
                b.ReaderQuotas = quotas;
                b.SendTimeout = TimeSpan.FromSeconds(30);
                b.ReceiveTimeout = TimeSpan.FromSeconds(30);
                return b;
            }
            var h = new BasicHttpBinding(BasicHttpSecurityMode.None);
            h.MaxReceivedMessageSize = Quota;
            h.MaxBufferSize = Quota;
            h.ReaderQuotas = quotas;
            h.SendTimeout = TimeSpan.FromSeconds(30);
            return h;
        }
    }

    class Session
    {
        readonly string kind, address, token;
        readonly int? client;
        ICalculator proxy;
        int seq;

        public Session(string kind, string address, string token, int? client)
        {
            this.kind = kind;
            this.address = address;
            this.token = token;
            this.client = client;
        }

        public void Run()
        {
            var factory = new ChannelFactory<ICalculator>(Program.MakeBinding(kind), new EndpointAddress(address));
            proxy = factory.CreateChannel();
            ((IClientChannel)proxy).Open();
            string suffix = client.HasValue ? " #" + client.Value : "";

            Call("Add", A("a", 2, "b", 3), () => proxy.Add(2, 3));
            Call("Add", A("a", -40, "b", 2), () => proxy.Add(-40, 2));
            Call("Add", A("a", int.MaxValue, "b", 1), () => proxy.Add(int.MaxValue, 1));
            Call("Divide", A("a", 1, "b", 3), () => proxy.Divide(1, 3));
            Call("Divide", A("a", 10, "b", 4), () => proxy.Divide(10, 4));
            Call("Divide", A("a", 1, "b", 0), () => proxy.Divide(1, 0));
            Call("Divide", A("a", 0, "b", 0), () => proxy.Divide(0, 0));
            Call("Divide", A("a", -7.25, "b", 1), () => proxy.Divide(-7.25, 1));
            Call("Echo", A("text", "Hello, WCF"), () => proxy.Echo("Hello, WCF"));
            var fancy = "Grüße, 世界! Привет 🚀 <&>\"'";
            Call("Echo", A("text", fancy), () => proxy.Echo(fancy));
            Call("Echo", A("text", ""), () => proxy.Echo(""));
            Call("Echo", A("text", null), () => proxy.Echo(null));
            foreach (var n in new[] { 16, 0, 1024 * 1024 })
            {
                var data = Pattern(n);
                Call("ReverseBytes", A("data", data), () => proxy.ReverseBytes(data));
            }
            var order = MakeOrder();
            Call("SubmitOrder", A("order", OrderJson(order)), () => SummaryJson(proxy.SubmitOrder(order)));
            Send("Notify", A("message", "first one-way" + suffix), () => proxy.Notify("first one-way" + suffix));
            Send("Notify", A("message", "second: ünïcödé ✓" + suffix), () => proxy.Notify("second: ünïcödé ✓" + suffix));
            Call("GetNotifications", A(), () => proxy.GetNotifications());
            Call("SafeDivide", A("a", 10, "b", 2), () => proxy.SafeDivide(10, 2));
            Call("SafeDivide", A("a", 1, "b", 0), () => proxy.SafeDivide(1, 0));
            Call("Fail", A("reason", "boom ✗"), () => { proxy.Fail("boom ✗"); return null; });
            Call("Add", A("a", 1, "b", 1), () => proxy.Add(1, 1));
            Call("Crash", A(), () => { proxy.Crash(); return null; });
            Note("channel state after Crash: " + ((ICommunicationObject)proxy).State);
            Call("Add", A("a", 2, "b", 3), () => proxy.Add(2, 3));
            ((IClientChannel)proxy).Close();
            Note("channel closed (Close)");
            factory.Close();
        }

        static J A(params object[] kv)
        {
            var o = new J();
            for (int i = 0; i + 1 < kv.Length; i += 2) o.Add((string)kv[i], kv[i + 1]);
            return o;
        }

        static byte[] Pattern(int n)
        {
            var b = new byte[n];
            for (int i = 0; i < n; i++) b[i] = (byte)((i * 31 + 7) & 0xFF);
            return b;
        }

        static Order MakeOrder()
        {
            return new Order
            {
                Id = 1001,
                Customer = "Zoë Müller",
                ShipTo = new Address { Street = "Hauptstraße 5", City = "München", Country = "DE" },
                Lines = new List<OrderLine>
                {
                    new OrderLine { Sku = "WIDGET-1", Quantity = 3, UnitPrice = 2.5 },
                    new OrderLine { Sku = "GADGET-ß", Quantity = 1, UnitPrice = 19.99 },
                    new OrderLine { Sku = "BOLT-9", Quantity = 100, UnitPrice = 0.05 },
                },
                Tags = new List<string> { "priority", "gift", "日本" },
                Created = new DateTime(2024, 5, 17, 13, 45, 30, 123, DateTimeKind.Utc),
                Express = true,
                Discount = 12.75m,
                Reference = new Guid("3f2504e0-4f89-11d3-9a0c-0305e82c3301"),
                Sequence = 9007199254740993L,
                Note = null,
            };
        }

        static J AddressJson(Address a)
        {
            return a == null ? null : new J().Add("Street", a.Street).Add("City", a.City).Add("Country", a.Country);
        }

        static J OrderJson(Order o)
        {
            var lines = new List<J>();
            foreach (var l in o.Lines) lines.Add(new J().Add("Sku", l.Sku).Add("Quantity", l.Quantity).Add("UnitPrice", l.UnitPrice));
            return new J().Add("Id", o.Id).Add("Customer", o.Customer).Add("ShipTo", AddressJson(o.ShipTo))
                .Add("Lines", lines).Add("Tags", o.Tags).Add("Created", o.Created).Add("Express", o.Express)
                .Add("Discount", o.Discount).Add("Reference", o.Reference).Add("Sequence", o.Sequence).Add("Note", o.Note);
        }

        static J SummaryJson(OrderSummary s)
        {
            if (s == null) return null;
            return new J().Add("OrderId", s.OrderId).Add("CustomerUpper", s.CustomerUpper).Add("LineCount", s.LineCount)
                .Add("TotalQuantity", s.TotalQuantity).Add("Total", s.Total).Add("Skus", s.Skus)
                .Add("ShipTo", AddressJson(s.ShipTo)).Add("Reference", s.Reference).Add("Created", s.Created)
                .Add("Express", s.Express);
        }

        static J CodeJson(FaultCode code)
        {
            if (code == null) return null;
            return new J().Add("name", code.Name).Add("ns", code.Namespace).Add("is_sender", code.IsSenderFault)
                .Add("is_receiver", code.IsReceiverFault).Add("subcode", CodeJson(code.SubCode));
        }

        J Line(string op, bool oneWay, J args)
        {
            var line = new J();
            if (client.HasValue) line.Add("client", client.Value);
            return line.Add("seq", ++seq).Add("op", op).Add("one_way", oneWay).Add("args", args);
        }

        void Note(string note)
        {
            var line = new J();
            if (client.HasValue) line.Add("client", client.Value);
            Program.Print(line.Add("seq", ++seq).Add("note", note));
        }

        // Runs f inside an OperationContextScope carrying the token, when there is one.
        T Scoped<T>(Func<T> f)
        {
            if (token == null) return f();
            using (new OperationContextScope((IContextChannel)proxy))
            {
                if (kind == "nettcp")
                {
                    OperationContext.Current.OutgoingMessageHeaders.Add(new RelayTokenHeader(token));
                }
                else
                {
                    var http = new HttpRequestMessageProperty();
                    http.Headers["ServiceBusAuthorization"] = token;
                    OperationContext.Current.OutgoingMessageProperties[HttpRequestMessageProperty.Name] = http;
                }
                return f();
            }
        }

        void Call(string op, J args, Func<object> f)
        {
            var line = Line(op, false, args);
            try
            {
                var result = Scoped(f);
                line.Add("outcome", "result").Add("result", result);
            }
            catch (FaultException<CalcFault> e)
            {
                var d = e.Detail;
                line.Add("outcome", "fault").Add("fault", new J().Add("type", "FaultException<CalcFault>")
                    .Add("code", CodeJson(e.Code)).Add("reason", e.Reason.ToString()).Add("action", e.Action)
                    .Add("detail", d == null ? null : new J().Add("Operation", d.Operation).Add("ProblemType", d.ProblemType).Add("Code", d.Code)));
            }
            catch (FaultException e)
            {
                line.Add("outcome", "fault").Add("fault", new J().Add("type", "FaultException")
                    .Add("code", CodeJson(e.Code)).Add("reason", e.Reason.ToString()).Add("action", e.Action)
                    .Add("detail", null));
            }
            catch (Exception e)
            {
                line.Add("outcome", "exception").Add("exception", new J().Add("type", e.GetType().FullName).Add("message", e.Message));
            }
            Program.Print(line);
        }

        void Send(string op, J args, Action f)
        {
            var line = Line(op, true, args);
            try
            {
                Scoped<object>(() => { f(); return null; });
                line.Add("outcome", "sent");
            }
            catch (Exception e)
            {
                line.Add("outcome", "exception").Add("exception", new J().Add("type", e.GetType().FullName).Add("message", e.Message));
            }
            Program.Print(line);
        }
    }
}
