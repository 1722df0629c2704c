// Mono's WCF reading a service's published metadata without svcutil (which writes an empty
// client for this contract, FINDINGS §1): MetadataExchangeClient fetches the WSDL and what it
// imports over HTTP GET, WsdlImporter turns it into endpoints (binding + address), and a
// ChannelFactory on each imported endpoint calls Add, so the binding and the address the
// metadata names are the ones used.
//
//     mono MetadataImport.exe http://HOST:PORT/PATH?wsdl
//
// One JSON line per imported endpoint: {"name", "binding", "address", "add"} ("add" is the
// result of Add(2, 3), or "error" says why the call failed); then {"done": true}. Import
// warnings and errors go to stderr; the exit code is 1 when nothing was imported.

using System;
using System.Collections.Generic;
using System.ServiceModel;
using System.ServiceModel.Description;

using Ferry.Interop.Contract;

namespace Ferry.Interop.Metadata
{
    static class Program
    {
        static string Quote(string s)
        {
            return "\"" + s.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"";
        }

        static int Main(string[] args)
        {
            var client = new MetadataExchangeClient(new Uri(args[0]), MetadataExchangeClientMode.HttpGet);
            client.ResolveMetadataReferences = true;
            MetadataSet metadata = client.GetMetadata();
            var importer = new WsdlImporter(metadata);
            ServiceEndpointCollection endpoints = importer.ImportAllEndpoints();
            foreach (MetadataConversionError e in importer.Errors)
                Console.Error.WriteLine((e.IsWarning ? "warning: " : "error: ") + e.Message);
            foreach (ServiceEndpoint endpoint in endpoints)
            {
                string result;
                try
                {
                    var factory = new ChannelFactory<ICalculator>(endpoint.Binding, endpoint.Address);
                    factory.Endpoint.Binding.SendTimeout = TimeSpan.FromSeconds(20);
                    ICalculator calc = factory.CreateChannel();
                    result = calc.Add(2, 3).ToString();
                    ((IClientChannel)calc).Close();
                    factory.Close();
                }
                catch (Exception e)
                {
                    result = "null, \"error\": " + Quote(e.GetType().Name + ": " + e.Message);
                }
                Console.WriteLine("{\"name\": " + Quote(endpoint.Name) + ", \"binding\": "
                    + Quote(endpoint.Binding.GetType().Name) + ", \"address\": "
                    + Quote(endpoint.Address.Uri.ToString()) + ", \"add\": " + result + "}");
            }
            Console.WriteLine("{\"done\": true}");
            return endpoints.Count > 0 ? 0 : 1;
        }
    }
}
