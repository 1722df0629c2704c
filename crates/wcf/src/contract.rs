//! What a generated service contract describes about itself: operations with their actions,
//! one-way flags and declared faults, and the endpoints the WSDL names. A service host uses it
//! to route by Action before decoding, and to tell whether a reply is expected.

pub use ferry_soap::SoapVersion;

/// A service contract (a WSDL `portType`, a WCF `[ServiceContract]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contract {
    /// The portType name (`ICalculator`).
    pub name: &'static str,
    /// Its namespace (`http://interop.example/calc/2024`).
    pub namespace: &'static str,
    /// Its operations, in WSDL order.
    pub operations: &'static [Operation],
}

impl Contract {
    /// The operation whose request has this action.
    pub fn operation(&self, action: &str) -> Option<&'static Operation> {
        self.operations.iter().find(|op| op.action == action)
    }
}

/// One operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Operation name (`Add`).
    pub name: &'static str,
    /// Request action (`…/ICalculator/Add`).
    pub action: &'static str,
    /// Reply action (`…/ICalculator/AddResponse`); `None` for a one-way operation.
    pub reply_action: Option<&'static str>,
    /// Declared faults.
    pub faults: &'static [FaultInfo],
}

impl Operation {
    /// True when no reply is sent (`IsOneWay = true`, a WSDL operation without output).
    pub fn is_one_way(&self) -> bool {
        self.reply_action.is_none()
    }
}

/// A declared fault (`wsdl:fault`, WCF's `[FaultContract]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultInfo {
    /// The `wsdl:fault` name (`CalcFaultFault`).
    pub name: &'static str,
    /// The fault's action.
    pub action: &'static str,
    /// Namespace of the detail element.
    pub namespace: &'static str,
    /// Local name of the detail element.
    pub element: &'static str,
}

/// An endpoint the WSDL's `wsdl:service` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The `wsdl:port` name (`NetTcpBinding_ICalculator`).
    pub name: &'static str,
    /// The contract it serves (portType name).
    pub contract: &'static str,
    /// SOAP version of its binding (`soap12:binding` or `soap:binding`).
    pub soap: SoapVersion,
    /// The binding's transport URI (`http://schemas.microsoft.com/soap/tcp` for net.tcp).
    pub transport: &'static str,
    /// The address as published.
    pub address: &'static str,
}
