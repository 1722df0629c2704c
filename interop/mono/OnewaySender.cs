// A NetOnewayRelayBinding / NetEventRelayBinding sender on Mono's WCF (System.ServiceModel): what
// those bindings put on the wire, ordinary net.tcp underneath (duplex mode 0x02, binary encoding
// with the session dictionary 0x08), made by a real WCF stack from a typed one-way contract.
//
//   mono OnewaySender.exe ADDRESS TOKEN|- [--count N] [--prefix TEXT] [--ping] [--clients K]
//                         [--linger MS]
//
// ADDRESS is net.tcp://host:port/path (the gateway's net.tcp front end). Each client opens one
// session and sends, every message with a RelayAccessToken header when a TOKEN (SAS) is given:
//   1. the relay's Connect: Action http://schemas.microsoft.com/netservices/2009/05/servicebus/
//      connect/Connect, body <Connect xmlns="…/servicebus/connect"><Uri>sb://host/path</Uri>
//      </Connect>;
//   2. the calculator's one-way Notify N times (default 10), message "TEXT:CLIENT:I" (TEXT
//      defaults to "notify"), with the relay's OnewayPing keep-alive after the first half when
//      --ping is given;
//   3. waits up to --linger ms (default 500) for anything sent back, then closes (End).
//
// A one-way proxy never reads its session, so a fault the gateway sends back (a refused token)
// would go unseen: the binding has one more channel layer above TCP (RelayWatchBindingElement)
// that reads the session while the client sends, as the relay bindings' own channels do.
//
// Output, one JSON line each: {"client", "op", "seq", "message"?, "outcome": "sent"|"exception",
// "exception"?} per message; {"client", "received": {"action", "is_fault", "fault"?}} per message
// received; {"client", "note": "closed"} or {"client", "error"}; finally {"done": true, "sent",
// "faults", "errors"}. Exit code 0 when every message was sent, each session closed and no fault
// came back; 1 otherwise.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.ServiceModel;
using System.ServiceModel.Channels;
using System.Text;
using System.Threading;
using System.Xml;

using Ferry.Interop.Contract;

namespace Ferry.Interop.Oneway
{
    static class Ns
    {
        public const string Connect = "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect";
        public const string Calc = "http://interop.example/calc/2024";
    }

    // The relay's Connect message: its body is the Connect data contract itself (not wrapped in
    // an operation element), <Connect xmlns=connect><Uri>…</Uri></Connect>.
    [MessageContract(IsWrapped = true, WrapperName = "Connect", WrapperNamespace = Ns.Connect)]
    public class ConnectMessage
    {
        [MessageBodyMember(Name = "Uri", Namespace = Ns.Connect)] public Uri Uri;
    }

    // The relay's keep-alive: an empty OnewayPing element.
    [MessageContract(IsWrapped = true, WrapperName = "OnewayPing", WrapperNamespace = Ns.Connect)]
    public class OnewayPingMessage
    {
    }

    // One-way only, as NetOneway / NetEvent contracts must be. Connect first; Notify is the
    // interop calculator's operation (ICalculator in interop/recordings/README.md).
    [ServiceContract(Namespace = Ns.Calc, Name = "ICalculator", SessionMode = SessionMode.Required)]
    public interface IOnewaySender
    {
        [OperationContract(IsOneWay = true, Action = Ns.Connect + "/Connect")]
        void Connect(ConnectMessage connect);

        [OperationContract(IsOneWay = true, Action = Ns.Calc + "/ICalculator/Notify")]
        void Notify(string message);

        [OperationContract(IsOneWay = true, Action = Ns.Connect + "/OnewayPing")]
        void OnewayPing(OnewayPingMessage ping);
    }

    // ---- The watching channel layer ------------------------------------------------------------

    // Sits above the TCP transport and reads the session in the background: every message that
    // comes back (on a one-way session only a fault is expected) is reported.
    class RelayWatchBindingElement : BindingElement
    {
        readonly Watcher watcher;

        public RelayWatchBindingElement(Watcher watcher) { this.watcher = watcher; }

        public override BindingElement Clone() { return new RelayWatchBindingElement(watcher); }

        public override T GetProperty<T>(BindingContext context) { return context.GetInnerProperty<T>(); }

        public override bool CanBuildChannelFactory<TChannel>(BindingContext context)
        {
            return typeof(TChannel) == typeof(IDuplexSessionChannel)
                && context.CanBuildInnerChannelFactory<TChannel>();
        }

        public override IChannelFactory<TChannel> BuildChannelFactory<TChannel>(BindingContext context)
        {
            if (typeof(TChannel) != typeof(IDuplexSessionChannel))
                throw new ArgumentException("only IDuplexSessionChannel");
            var inner = context.BuildInnerChannelFactory<IDuplexSessionChannel>();
            return (IChannelFactory<TChannel>)(object)new WatchFactory(inner, context.Binding, watcher);
        }
    }

    class WatchFactory : ChannelFactoryBase<IDuplexSessionChannel>
    {
        readonly IChannelFactory<IDuplexSessionChannel> inner;
        readonly Watcher watcher;

        public WatchFactory(IChannelFactory<IDuplexSessionChannel> inner, IDefaultCommunicationTimeouts timeouts, Watcher watcher)
            : base(timeouts)
        {
            this.inner = inner;
            this.watcher = watcher;
        }

        protected override IDuplexSessionChannel OnCreateChannel(EndpointAddress address, Uri via)
        {
            return new WatchChannel(this, inner.CreateChannel(address, via), watcher);
        }

        protected override void OnOpen(TimeSpan timeout) { inner.Open(timeout); }

        protected override IAsyncResult OnBeginOpen(TimeSpan timeout, AsyncCallback callback, object state)
        {
            return inner.BeginOpen(timeout, callback, state);
        }

        protected override void OnEndOpen(IAsyncResult result) { inner.EndOpen(result); }

        protected override void OnClose(TimeSpan timeout)
        {
            base.OnClose(timeout);
            inner.Close(timeout);
        }

        protected override void OnAbort()
        {
            base.OnAbort();
            inner.Abort();
        }

        public override T GetProperty<T>() { return inner.GetProperty<T>(); }
    }

    // What the watching layer reports to, and how the sender waits for it.
    class Watcher
    {
        public int Client;
        public int Faults;
        public readonly ManualResetEvent Ended = new ManualResetEvent(false);

        public void Received(Message message)
        {
            var line = new J().Add("client", Client);
            var received = new J().Add("action", message.Headers.Action).Add("is_fault", message.IsFault);
            if (message.IsFault)
            {
                Interlocked.Increment(ref Faults);
                // Read from a buffered copy, as the client runtime reads the faults that answer
                // calls (Mono's streamed body reader loses the envelope's namespace declarations,
                // which the fault code's QName needs).
                var buffered = message.CreateBufferedCopy(64 * 1024);
                var fault = MessageFault.CreateFault(buffered.CreateMessage(), 64 * 1024);
                var code = fault.Code;
                received.Add("fault", new J()
                    .Add("code", code.Name).Add("code_ns", code.Namespace)
                    .Add("subcode", code.SubCode == null ? null : code.SubCode.Name)
                    .Add("subcode_ns", code.SubCode == null ? null : code.SubCode.Namespace)
                    .Add("reason", fault.Reason.Translations.Count > 0 ? fault.Reason.Translations[0].Text : null));
                // A fault ends a relay session: stop waiting.
                Ended.Set();
            }
            Program.Print(line.Add("received", received));
        }
    }

    class WatchChannel : ChannelBase, IDuplexSessionChannel
    {
        readonly IDuplexSessionChannel inner;
        readonly Watcher watcher;
        readonly TimeSpan openTimeout, closeTimeout, receiveTimeout;
        Thread reader;

        public WatchChannel(WatchFactory factory, IDuplexSessionChannel inner, Watcher watcher) : base(factory)
        {
            this.inner = inner;
            this.watcher = watcher;
            var timeouts = (IDefaultCommunicationTimeouts)factory;
            openTimeout = timeouts.OpenTimeout;
            closeTimeout = timeouts.CloseTimeout;
            receiveTimeout = timeouts.ReceiveTimeout;
        }

        protected override TimeSpan DefaultOpenTimeout { get { return openTimeout; } }
        protected override TimeSpan DefaultCloseTimeout { get { return closeTimeout; } }

        // Reads until the session ends (End, end of stream, the socket closed by Close, or the
        // receive timeout): the gateway may send a fault at any time.
        void ReadLoop()
        {
            try
            {
                while (true)
                {
                    Message message;
                    if (!inner.TryReceive(receiveTimeout, out message) || message == null)
                        break;
                    watcher.Received(message);
                }
            }
            catch (Exception)
            {
                // The socket closed under the read (our own Close, possibly during the 50 ms
                // Mono's TryReceive sleeps first): the session is over either way.
            }
            finally
            {
                watcher.Ended.Set();
            }
        }

        protected override void OnOpen(TimeSpan timeout)
        {
            inner.Open(timeout);
            reader = new Thread(ReadLoop) { IsBackground = true };
            reader.Start();
        }

        protected override IAsyncResult OnBeginOpen(TimeSpan timeout, AsyncCallback callback, object state)
        {
            Action<TimeSpan> open = OnOpen;
            return open.BeginInvoke(timeout, callback, open);
        }

        protected override void OnEndOpen(IAsyncResult result) { ((Action<TimeSpan>)result.AsyncState).EndInvoke(result); }

        protected override void OnClose(TimeSpan timeout)
        {
            inner.Close(timeout);
            if (reader != null) reader.Join(timeout);
        }

        protected override IAsyncResult OnBeginClose(TimeSpan timeout, AsyncCallback callback, object state)
        {
            Action<TimeSpan> close = OnClose;
            return close.BeginInvoke(timeout, callback, close);
        }

        protected override void OnEndClose(IAsyncResult result) { ((Action<TimeSpan>)result.AsyncState).EndInvoke(result); }

        protected override void OnAbort() { inner.Abort(); }

        public override T GetProperty<T>() { return inner.GetProperty<T>(); }

        public IDuplexSession Session { get { return inner.Session; } }
        public EndpointAddress LocalAddress { get { return inner.LocalAddress; } }
        public EndpointAddress RemoteAddress { get { return inner.RemoteAddress; } }
        public Uri Via { get { return inner.Via; } }

        public void Send(Message message) { inner.Send(message); }
        public void Send(Message message, TimeSpan timeout) { inner.Send(message, timeout); }
        public IAsyncResult BeginSend(Message message, AsyncCallback callback, object state) { return inner.BeginSend(message, callback, state); }
        public IAsyncResult BeginSend(Message message, TimeSpan timeout, AsyncCallback callback, object state) { return inner.BeginSend(message, timeout, callback, state); }
        public void EndSend(IAsyncResult result) { inner.EndSend(result); }

        // The reading thread owns the input side; nobody else receives on a one-way session.
        const string OwnedByWatcher = "the session's input is read by the watching layer";
        public Message Receive() { throw new InvalidOperationException(OwnedByWatcher); }
        public Message Receive(TimeSpan timeout) { throw new InvalidOperationException(OwnedByWatcher); }
        public IAsyncResult BeginReceive(AsyncCallback callback, object state) { throw new InvalidOperationException(OwnedByWatcher); }
        public IAsyncResult BeginReceive(TimeSpan timeout, AsyncCallback callback, object state) { throw new InvalidOperationException(OwnedByWatcher); }
        public Message EndReceive(IAsyncResult result) { throw new InvalidOperationException(OwnedByWatcher); }
        public bool TryReceive(TimeSpan timeout, out Message message) { throw new InvalidOperationException(OwnedByWatcher); }
        public IAsyncResult BeginTryReceive(TimeSpan timeout, AsyncCallback callback, object state) { throw new InvalidOperationException(OwnedByWatcher); }
        public bool EndTryReceive(IAsyncResult result, out Message message) { throw new InvalidOperationException(OwnedByWatcher); }
        public bool WaitForMessage(TimeSpan timeout) { throw new InvalidOperationException(OwnedByWatcher); }
        public IAsyncResult BeginWaitForMessage(TimeSpan timeout, AsyncCallback callback, object state) { throw new InvalidOperationException(OwnedByWatcher); }
        public bool EndWaitForMessage(IAsyncResult result) { throw new InvalidOperationException(OwnedByWatcher); }
    }

    // ---- Output --------------------------------------------------------------------------------

    // An ordered JSON object.
    class J : List<KeyValuePair<string, object>>
    {
        public J Add(string key, object value)
        {
            Add(new KeyValuePair<string, object>(key, value));
            return this;
        }

        public override string ToString()
        {
            var sb = new StringBuilder();
            Write(sb, this);
            return sb.ToString();
        }

        static void Write(StringBuilder sb, object v)
        {
            if (v == null) { sb.Append("null"); return; }
            if (v is bool) { sb.Append((bool)v ? "true" : "false"); return; }
            if (v is int) { sb.Append(((int)v).ToString(CultureInfo.InvariantCulture)); return; }
            var o = v as J;
            if (o != null)
            {
                sb.Append('{');
                for (int i = 0; i < o.Count; i++)
                {
                    if (i > 0) sb.Append(", ");
                    Write(sb, o[i].Key);
                    sb.Append(": ");
                    Write(sb, o[i].Value);
                }
                sb.Append('}');
                return;
            }
            sb.Append('"');
            foreach (var c in v.ToString())
            {
                switch (c)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    default:
                        if (c < 0x20) sb.AppendFormat("\\u{0:x4}", (int)c);
                        else sb.Append(c);
                        break;
                }
            }
            sb.Append('"');
        }
    }

    // ---- The sender ----------------------------------------------------------------------------

    class Program
    {
        static readonly object OutputLock = new object();
        static int sent, faults, errors;

        public static void Print(J line)
        {
            lock (OutputLock)
            {
                Console.WriteLine(line.ToString());
                Console.Out.Flush();
            }
        }

        static int Usage()
        {
            Console.Error.WriteLine("usage: OnewaySender.exe ADDRESS TOKEN|- [--count N] [--prefix TEXT] [--ping] [--clients K] [--linger MS]");
            return 2;
        }

        static int Main(string[] args)
        {
            Console.OutputEncoding = new UTF8Encoding(false);
            var positional = new List<string>();
            int count = 10, clients = 1, linger = 500;
            string prefix = "notify";
            bool ping = false;
            for (int i = 0; i < args.Length; i++)
            {
                switch (args[i])
                {
                    case "--count": if (++i >= args.Length) return Usage(); count = int.Parse(args[i]); break;
                    case "--clients": if (++i >= args.Length) return Usage(); clients = int.Parse(args[i]); break;
                    case "--linger": if (++i >= args.Length) return Usage(); linger = int.Parse(args[i]); break;
                    case "--prefix": if (++i >= args.Length) return Usage(); prefix = args[i]; break;
                    case "--ping": ping = true; break;
                    default: positional.Add(args[i]); break;
                }
            }
            if (positional.Count != 2) return Usage();
            var address = new Uri(positional[0]);
            string token = positional[1] == "-" ? null : positional[1];

            var threads = new List<Thread>();
            for (int c = 0; c < clients; c++)
            {
                int client = c;
                var t = new Thread(() => Session(client, address, token, count, prefix, ping, linger));
                t.Start();
                threads.Add(t);
            }
            foreach (var t in threads) t.Join();
            Print(new J().Add("done", true).Add("sent", sent).Add("faults", faults).Add("errors", errors));
            return faults == 0 && errors == 0 ? 0 : 1;
        }

        static Binding MakeBinding(Watcher watcher)
        {
            var netTcp = new NetTcpBinding(SecurityMode.None);
            netTcp.SendTimeout = TimeSpan.FromSeconds(30);
            netTcp.ReceiveTimeout = TimeSpan.FromSeconds(30);
            netTcp.OpenTimeout = TimeSpan.FromSeconds(30);
            netTcp.CloseTimeout = TimeSpan.FromSeconds(10);
            var elements = netTcp.CreateBindingElements();
            elements.Insert(0, new RelayWatchBindingElement(watcher));
            var binding = new CustomBinding(elements);
            binding.SendTimeout = netTcp.SendTimeout;
            binding.ReceiveTimeout = netTcp.ReceiveTimeout;
            binding.OpenTimeout = netTcp.OpenTimeout;
            binding.CloseTimeout = netTcp.CloseTimeout;
            return binding;
        }

        static void Session(int client, Uri address, string token, int count, string prefix, bool ping, int linger)
        {
            var watcher = new Watcher { Client = client };
            ChannelFactory<IOnewaySender> factory = null;
            IOnewaySender proxy = null;
            int seq = 0;
            // Runs one one-way call in a scope carrying the token; reports it.
            Action<string, string, Action> send = (op, message, call) =>
            {
                var line = new J().Add("client", client).Add("op", op).Add("seq", ++seq);
                if (message != null) line.Add("message", message);
                try
                {
                    using (new OperationContextScope((IContextChannel)proxy))
                    {
                        if (token != null)
                            OperationContext.Current.OutgoingMessageHeaders.Add(new RelayTokenHeader(token));
                        call();
                    }
                    Interlocked.Increment(ref sent);
                    line.Add("outcome", "sent");
                }
                catch (Exception e)
                {
                    Interlocked.Increment(ref errors);
                    line.Add("outcome", "exception").Add("exception", e.GetType().FullName + ": " + e.Message);
                }
                Print(line);
            };
            try
            {
                factory = new ChannelFactory<IOnewaySender>(MakeBinding(watcher), new EndpointAddress(address));
                proxy = factory.CreateChannel();
                ((IClientChannel)proxy).Open();
                var sb = new UriBuilder(address) { Scheme = "sb", Port = -1 }.Uri;
                send("Connect", null, () => proxy.Connect(new ConnectMessage { Uri = sb }));
                for (int i = 0; i < count; i++)
                {
                    if (ping && i == count / 2)
                        send("OnewayPing", null, () => proxy.OnewayPing(new OnewayPingMessage()));
                    var message = prefix + ":" + client + ":" + i;
                    send("Notify", message, () => proxy.Notify(message));
                }
                // Whatever the other side has to say (a fault) comes now or not at all.
                watcher.Ended.WaitOne(linger);
                ((IClientChannel)proxy).Close();
                Print(new J().Add("client", client).Add("note", "closed"));
                factory.Close();
            }
            catch (Exception e)
            {
                Interlocked.Increment(ref errors);
                Print(new J().Add("client", client).Add("error", e.GetType().FullName + ": " + e.Message));
                if (proxy != null) ((IClientChannel)proxy).Abort();
                if (factory != null) factory.Abort();
            }
            finally
            {
                // The reading thread reports before the session counts as finished.
                watcher.Ended.WaitOne(TimeSpan.FromSeconds(10));
                Interlocked.Add(ref faults, watcher.Faults);
            }
        }
    }
}
