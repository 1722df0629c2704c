// The interop calculator's contract as the recorded Mono service declares it (ICalculator in
// http://interop.example/calc/2024, data contracts in http://interop.example/calc/types), and the
// relay's RelayAccessToken header: compiled into every C# peer under interop/mono.

using System;
using System.Collections.Generic;
using System.Runtime.Serialization;
using System.ServiceModel;
using System.ServiceModel.Channels;
using System.Text;
using System.Xml;

namespace Ferry.Interop.Contract
{
    [DataContract(Namespace = "http://interop.example/calc/types")]
    public class Address
    {
        [DataMember(Order = 0)] public string Street;
        [DataMember(Order = 1)] public string City;
        [DataMember(Order = 2)] public string Country;
    }

    [DataContract(Namespace = "http://interop.example/calc/types")]
    public class OrderLine
    {
        [DataMember(Order = 0)] public string Sku;
        [DataMember(Order = 1)] public int Quantity;
        [DataMember(Order = 2)] public double UnitPrice;
    }

    [DataContract(Namespace = "http://interop.example/calc/types")]
    public class Order
    {
        [DataMember(Order = 0)] public int Id;
        [DataMember(Order = 1)] public string Customer;
        [DataMember(Order = 2)] public Address ShipTo;
        [DataMember(Order = 3)] public List<OrderLine> Lines;
        [DataMember(Order = 4)] public List<string> Tags;
        [DataMember(Order = 5)] public DateTime Created;
        [DataMember(Order = 6)] public bool Express;
        [DataMember(Order = 7)] public decimal Discount;
        [DataMember(Order = 8)] public Guid Reference;
        [DataMember(Order = 9)] public long Sequence;
        [DataMember(Order = 10)] public string Note;
    }

    [DataContract(Namespace = "http://interop.example/calc/types")]
    public class OrderSummary
    {
        [DataMember(Order = 0)] public int OrderId;
        [DataMember(Order = 1)] public string CustomerUpper;
        [DataMember(Order = 2)] public int LineCount;
        [DataMember(Order = 3)] public int TotalQuantity;
        [DataMember(Order = 4)] public double Total;
        [DataMember(Order = 5)] public List<string> Skus;
        [DataMember(Order = 6)] public Address ShipTo;
        [DataMember(Order = 7)] public Guid Reference;
        [DataMember(Order = 8)] public DateTime Created;
        [DataMember(Order = 9)] public bool Express;
    }

    [DataContract(Namespace = "http://interop.example/calc/types")]
    public class CalcFault
    {
        [DataMember(Order = 0)] public string Operation;
        [DataMember(Order = 1)] public string ProblemType;
        [DataMember(Order = 2)] public int Code;
    }

    [ServiceContract(Namespace = "http://interop.example/calc/2024")]
    public interface ICalculator
    {
        [OperationContract] int Add(int a, int b);
        [OperationContract] double Divide(double a, double b);
        [OperationContract] string Echo(string text);
        [OperationContract] byte[] ReverseBytes(byte[] data);
        [OperationContract] OrderSummary SubmitOrder(Order order);
        [OperationContract(IsOneWay = true)] void Notify(string message);
        [OperationContract] List<string> GetNotifications();
        [OperationContract]
        [FaultContract(typeof(CalcFault))]
        int SafeDivide(int a, int b);
        [OperationContract] void Fail(string reason);
        [OperationContract] void Crash();
    }

    // The relay's token header: RelayAccessToken wrapping a WS-Security BinarySecurityToken whose
    // content is the base64 of the SAS token's UTF-8 bytes.
    public class RelayTokenHeader : MessageHeader
    {
        const string ConnectNs = "http://schemas.microsoft.com/netservices/2009/05/servicebus/connect";
        const string WsseNs = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
        const string WsuNs = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
        const string ValueType = "http://schemas.xmlsoap.org/ws/2009/11/swt-token-profile-1.0";
        const string EncodingType = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

        readonly string token;

        public RelayTokenHeader(string token) { this.token = token; }

        public override string Name { get { return "RelayAccessToken"; } }
        public override string Namespace { get { return ConnectNs; } }

        protected override void OnWriteHeaderContents(XmlDictionaryWriter w, MessageVersion version)
        {
            w.WriteStartElement("wsse", "BinarySecurityToken", WsseNs);
            w.WriteAttributeString("wsu", "Id", WsuNs, "uuid:" + Guid.NewGuid());
            w.WriteAttributeString("ValueType", ValueType);
            w.WriteAttributeString("EncodingType", EncodingType);
            var bytes = Encoding.UTF8.GetBytes(token);
            w.WriteBase64(bytes, 0, bytes.Length);
            w.WriteEndElement();
        }
    }
}
