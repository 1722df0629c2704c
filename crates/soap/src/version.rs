//! SOAP and WS-Addressing versions.

/// SOAP 1.1 envelope namespace.
pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// SOAP 1.2 envelope namespace.
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Addressing 1.0 namespace (WCF's `Addressing10`).
pub const WSA10_NS: &str = "http://www.w3.org/2005/08/addressing";
/// WS-Addressing August 2004 namespace.
pub const WSA200408_NS: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
/// WCF's namespace for the Action header of a binding without addressing (seen on Mono's
/// basicHttp faults).
pub const WSA_NONE_NS: &str = "http://schemas.microsoft.com/ws/2005/05/addressing/none";
/// The anonymous address of WS-Addressing 1.0.
pub const WSA10_ANONYMOUS: &str = "http://www.w3.org/2005/08/addressing/anonymous";
/// WS-Addressing 1.0's action for a SOAP fault that names no action of its own.
pub const WSA10_FAULT_ACTION: &str = "http://www.w3.org/2005/08/addressing/soap/fault";
/// XML Schema instance namespace (`xsi:nil`).
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// SOAP version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SoapVersion {
    /// SOAP 1.1 (basicHttp).
    Soap11,
    /// SOAP 1.2 (net.tcp and the WS bindings).
    Soap12,
}

impl SoapVersion {
    /// The envelope namespace.
    pub fn namespace(self) -> &'static str {
        match self {
            Self::Soap11 => SOAP11_NS,
            Self::Soap12 => SOAP12_NS,
        }
    }

    /// From an envelope namespace.
    pub fn from_namespace(ns: &str) -> Option<Self> {
        match ns {
            SOAP11_NS => Some(Self::Soap11),
            SOAP12_NS => Some(Self::Soap12),
            _ => None,
        }
    }
}

/// WS-Addressing version of an envelope's headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressingVersion {
    /// No addressing headers (basicHttp).
    None,
    /// WS-Addressing 1.0.
    Wsa10,
    /// WS-Addressing August 2004.
    Wsa200408,
}

impl AddressingVersion {
    /// The namespace of its headers (WCF's "none" namespace for [`AddressingVersion::None`]).
    pub fn namespace(self) -> &'static str {
        match self {
            Self::None => WSA_NONE_NS,
            Self::Wsa10 => WSA10_NS,
            Self::Wsa200408 => WSA200408_NS,
        }
    }

    /// From a header namespace.
    pub fn from_namespace(ns: &str) -> Option<Self> {
        match ns {
            WSA10_NS => Some(Self::Wsa10),
            WSA200408_NS => Some(Self::Wsa200408),
            WSA_NONE_NS => Some(Self::None),
            _ => None,
        }
    }
}
