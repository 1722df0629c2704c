// The interop calculator service on Mono's WCF (System.ServiceModel), as interop/recordings/README.md
// describes it: contract ICalculator in http://interop.example/calc/2024, data contracts in
// http://interop.example/calc/types, published metadata equal to wsdl/calculator/*.
//
//   mono CalcService.exe --tcp PORT [--http PORT] [--mex PORT] [--host 127.0.0.1] [--max-sessions N]
//
// Endpoints (each on its own port: Mono cannot share a port between two net.tcp endpoints):
//   net.tcp://HOST:TCP/calc/tcp    NetTcpBinding, SecurityMode.None
//   http://HOST:HTTP/calc/basic    BasicHttpBinding, no security; WSDL at http://HOST:HTTP/calc?wsdl
//   net.tcp://HOST:MEX/calc/mex    mexTcpBinding (Mono answers WS-Transfer Get with empty Metadata)
// Quotas: MaxReceivedMessageSize and reader quotas 64 MiB; everything else default. That includes
// the service throttle: Mono serves at most 10 sessions at once (the .NET 3.x default of
// MaxConcurrentSessions; further clients wait in Open), unless --max-sessions N raises it (a load
// test with more channels needs that).
//
// Mono drops a net.tcp message whose To differs from the endpoint address (FINDINGS.md §5.2), so
// whoever calls the net.tcp endpoint must address it exactly as printed. When every endpoint is
// open it prints one line to stdout:
//   ready tcp=net.tcp://HOST:TCP/calc/tcp http=http://HOST:HTTP/calc/basic mex=net.tcp://HOST:MEX/calc/mex
// and then runs until the process is killed.

using System;
using System.Collections.Generic;
using System.Runtime.Serialization;
using System.ServiceModel;
using System.ServiceModel.Channels;
using System.ServiceModel.Description;
using System.Threading;

using Ferry.Interop.Contract;

namespace Ferry.Interop
{
    // One instance for every session and binding: Notify over basicHttp and GetNotifications on
    // the next request must see the same list (the recording's http-basic does exactly that).
    [ServiceBehavior(InstanceContextMode = InstanceContextMode.Single,
                     ConcurrencyMode = ConcurrencyMode.Multiple)]
    public class Calculator : ICalculator
    {
        readonly object gate = new object();
        List<string> notifications = new List<string>();

        public int Add(int a, int b) { return unchecked(a + b); }

        public double Divide(double a, double b) { return a / b; }

        public string Echo(string text) { return text == null ? null : "echo:" + text; }

        public byte[] ReverseBytes(byte[] data)
        {
            if (data == null) return null;
            var copy = (byte[])data.Clone();
            Array.Reverse(copy);
            return copy;
        }

        public OrderSummary SubmitOrder(Order order)
        {
            if (order == null) return null;
            var summary = new OrderSummary
            {
                OrderId = order.Id,
                CustomerUpper = order.Customer == null ? null : order.Customer.ToUpperInvariant(),
                Skus = new List<string>(),
                Reference = order.Reference,
                Created = order.Created,
                Express = order.Express,
            };
            if (order.ShipTo != null)
            {
                summary.ShipTo = new Address
                {
                    Street = order.ShipTo.Street,
                    City = order.ShipTo.City == null ? null : order.ShipTo.City.ToUpperInvariant(),
                    Country = order.ShipTo.Country,
                };
            }
            if (order.Lines != null)
            {
                foreach (var line in order.Lines)
                {
                    if (line == null) continue;
                    summary.LineCount++;
                    summary.TotalQuantity += line.Quantity;
                    summary.Total += line.Quantity * line.UnitPrice;
                    summary.Skus.Add(line.Sku);
                }
            }
            return summary;
        }

        public void Notify(string message)
        {
            lock (gate) notifications.Add(message);
        }

        public List<string> GetNotifications()
        {
            lock (gate)
            {
                var drained = notifications;
                notifications = new List<string>();
                return drained;
            }
        }

        public int SafeDivide(int a, int b)
        {
            if (b == 0)
            {
                var detail = new CalcFault
                {
                    Operation = "SafeDivide",
                    ProblemType = "Division by zero",
                    Code = 4242,
                };
                throw new FaultException<CalcFault>(detail, new FaultReason("Cannot divide by zero"),
                    new FaultCode("DivideByZero", "http://interop.example/calc/2024"));
            }
            return a / b;
        }

        public void Fail(string reason) { throw new FaultException(reason); }

        public void Crash() { throw new InvalidOperationException("crash requested"); }
    }

    public static class Program
    {
        const int Quota = 64 * 1024 * 1024;

        static void Quotas(System.Xml.XmlDictionaryReaderQuotas q)
        {
            q.MaxArrayLength = Quota;
            q.MaxStringContentLength = Quota;
            q.MaxBytesPerRead = Quota;
            q.MaxDepth = 64;
            q.MaxNameTableCharCount = Quota;
        }

        static int Usage(string why)
        {
            Console.Error.WriteLine("CalcService: " + why);
            Console.Error.WriteLine("usage: CalcService.exe --tcp PORT [--http PORT] [--mex PORT] [--host HOST] [--max-sessions N]");
            return 2;
        }

        public static int Main(string[] args)
        {
            int tcp = 0, http = 0, mex = 0, maxSessions = 0;
            string host = "127.0.0.1";
            for (int i = 0; i < args.Length; i++)
            {
                if (i + 1 >= args.Length) return Usage("missing value for " + args[i]);
                string value = args[++i];
                switch (args[i - 1])
                {
                    case "--tcp": tcp = int.Parse(value); break;
                    case "--http": http = int.Parse(value); break;
                    case "--mex": mex = int.Parse(value); break;
                    case "--host": host = value; break;
                    case "--max-sessions": maxSessions = int.Parse(value); break;
                    default: return Usage("unknown option " + args[i - 1]);
                }
            }
            if (tcp <= 0) return Usage("--tcp PORT is required (WCF cannot pick a free port itself)");

            var bases = new List<Uri>();
            if (http > 0) bases.Add(new Uri("http://" + host + ":" + http + "/calc"));
            var serviceHost = new ServiceHost(new Calculator(), bases.ToArray());

            var netTcp = new NetTcpBinding(SecurityMode.None);
            netTcp.MaxReceivedMessageSize = Quota;
            netTcp.MaxBufferSize = Quota;
            Quotas(netTcp.ReaderQuotas);
            string tcpAddress = "net.tcp://" + host + ":" + tcp + "/calc/tcp";
            serviceHost.AddServiceEndpoint(typeof(ICalculator), netTcp, tcpAddress);

            string ready = "ready tcp=" + tcpAddress;
            if (http > 0)
            {
                var basic = new BasicHttpBinding(BasicHttpSecurityMode.None);
                basic.MaxReceivedMessageSize = Quota;
                basic.MaxBufferSize = Quota;
                Quotas(basic.ReaderQuotas);
                string httpAddress = "http://" + host + ":" + http + "/calc/basic";
                serviceHost.AddServiceEndpoint(typeof(ICalculator), basic, httpAddress);
                ready += " http=" + httpAddress;
            }

            var metadata = new ServiceMetadataBehavior();
            metadata.HttpGetEnabled = http > 0;
            serviceHost.Description.Behaviors.Add(metadata);
            if (maxSessions > 0)
            {
                serviceHost.Description.Behaviors.Add(new ServiceThrottlingBehavior
                {
                    MaxConcurrentSessions = maxSessions,
                    MaxConcurrentCalls = maxSessions,
                    MaxConcurrentInstances = maxSessions,
                });
            }
            if (mex > 0)
            {
                string mexAddress = "net.tcp://" + host + ":" + mex + "/calc/mex";
                serviceHost.AddServiceEndpoint(typeof(IMetadataExchange),
                    MetadataExchangeBindings.CreateMexTcpBinding(), mexAddress);
                ready += " mex=" + mexAddress;
            }

            serviceHost.Open();
            Console.WriteLine(ready);
            Console.Out.Flush();
            // Runs until killed: stdin may be /dev/null under a test runner, so it is no signal.
            Thread.Sleep(Timeout.Infinite);
            return 0;
        }
    }
}
