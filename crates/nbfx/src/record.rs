//! MC-NBFX records (2.2): their types, the nom parser and the encoder.
//!
//! Records borrow from the input (`Record<'a>`); [`Record::into_owned`] copies. Names and text
//! that came from a dictionary keep their id ([`StringForm::Dictionary`]) next to the resolved
//! string, so a document can be re-encoded with the same record choices.
//!
//! The encoder makes the choices WCF's `XmlBinaryNodeWriter` makes: `Short*` records for an empty
//! prefix, the `Prefix*A`–`Z` shortcuts for a one-letter prefix, the smallest length field for
//! strings and bytes. Choosing *which* text record represents a value (Int8 vs Int32, Float vs
//! Double, UTF-8 vs UTF-16) is done by the [`Text`] constructors such as [`Text::from_i64`].

use std::{borrow::Cow, fmt};

use base64::Engine as _;

use nom::{IResult, Parser, bytes::complete::take, error::ErrorKind};

use crate::{
    dictionary::{DictionaryId, SessionDictionary, StaticDictionary, WriterSession},
    error::{DecodeError, EncodeError},
    limits::{Limit, Limits},
    string::Str,
    value::{DateTime, Decimal, Guid, TimeSpan, format_double, format_float},
    varint,
};

/// The single-letter prefixes of the `Prefix*A`–`Z` records.
pub(crate) const LETTERS: [&str; 26] = [
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s",
    "t", "u", "v", "w", "x", "y", "z",
];

/// How a name or text string is (or should be) written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum StringForm {
    /// As a literal MB31-length-prefixed UTF-8 string.
    #[default]
    Inline,
    /// As a DictionaryString. An even id is written as is; for an odd (session) id the writer asks
    /// its [`WriterSession`] for the string's id in the current session, and writes the string
    /// inline when there is no session or its quota is spent.
    Dictionary(DictionaryId),
}

/// A name, namespace or dictionary text: the resolved string and how it was written.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct XmlString<'a> {
    /// The string.
    pub text: Str<'a>,
    /// Where it came from / how to write it.
    pub form: StringForm,
}

impl<'a> XmlString<'a> {
    /// A string to be written inline.
    pub fn inline(text: impl Into<Str<'a>>) -> Self {
        Self {
            text: text.into(),
            form: StringForm::Inline,
        }
    }

    /// A static dictionary string by wire id, `None` if the id is undefined.
    pub fn static_id(id: u32) -> Option<XmlString<'static>> {
        StaticDictionary::lookup(DictionaryId(id)).map(|s| XmlString {
            text: Str::Static(s),
            form: StringForm::Dictionary(DictionaryId(id)),
        })
    }

    /// `text` as a static dictionary string when the dictionary has it (then pointing at the
    /// dictionary's copy), else inline.
    pub fn prefer_static(text: impl Into<Str<'a>>) -> Self {
        let text = text.into();
        match StaticDictionary::id_of(&text) {
            Some(id) => Self {
                text: StaticDictionary::lookup(id).map_or(text, Str::Static),
                form: StringForm::Dictionary(id),
            },
            None => Self {
                text,
                form: StringForm::Inline,
            },
        }
    }

    /// `text` marked for the session dictionary (written with a session id when the writer has
    /// a session with quota left, else inline).
    pub fn session(text: impl Into<Str<'a>>) -> Self {
        Self {
            text: text.into(),
            form: StringForm::Dictionary(DictionaryId(1)),
        }
    }

    /// Copies borrowed data; dictionary and shared strings are not copied.
    pub fn into_owned(self) -> XmlString<'static> {
        XmlString {
            text: self.text.into_owned(),
            form: self.form,
        }
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A borrowed copy.
    pub fn borrowed(&self) -> XmlString<'_> {
        XmlString {
            text: self.text.borrowed(),
            form: self.form,
        }
    }
}

/// One MC-NBFX record.
#[derive(Clone, Debug, PartialEq)]
pub enum Record<'a> {
    /// 0x01 EndElement (2.2.1.1).
    EndElement,
    /// 0x02 Comment (2.2.1.2).
    Comment(Cow<'a, str>),
    /// 0x03 Array (2.2.1.3).
    Array(Array<'a>),
    /// 0x04–0x07, 0x0C–0x3F: the attribute records (2.2.2).
    Attribute(Attribute<'a>),
    /// 0x08–0x0B: the namespace declaration records (2.2.2).
    Xmlns(Xmlns<'a>),
    /// 0x40–0x77: the element records (2.2.1).
    Element(StartElement<'a>),
    /// 0x80–0xBD: a text record (2.2.3); `end` for the odd WithEndElement variant, which closes
    /// the current element.
    Text {
        /// The value.
        text: Text<'a>,
        /// True for the WithEndElement variant.
        end: bool,
    },
}

/// An element start tag's name (records 0x40–0x77).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StartElement<'a> {
    /// Prefix, empty for none.
    pub prefix: Cow<'a, str>,
    /// Local name.
    pub name: XmlString<'a>,
}

/// An attribute (records 0x04–0x07, 0x0C–0x3F) with its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute<'a> {
    /// Prefix, empty for none.
    pub prefix: Cow<'a, str>,
    /// Local name.
    pub name: XmlString<'a>,
    /// The value: one plain text record or a list.
    pub value: Text<'a>,
}

/// A namespace declaration (records 0x08–0x0B).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xmlns<'a> {
    /// Declared prefix, empty for the default namespace.
    pub prefix: Cow<'a, str>,
    /// Namespace URI.
    pub namespace: XmlString<'a>,
}

/// An attribute or a namespace declaration, in document order.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr<'a> {
    /// An attribute.
    Attribute(Attribute<'a>),
    /// A namespace declaration.
    Xmlns(Xmlns<'a>),
}

impl Attr<'_> {
    /// Copies borrowed data.
    pub fn into_owned(self) -> Attr<'static> {
        match self {
            Self::Attribute(a) => Attr::Attribute(a.into_owned()),
            Self::Xmlns(x) => Attr::Xmlns(x.into_owned()),
        }
    }
}

/// Value type of an [`Array`] record (MC-NBFX 2.2.1.3; always the WithEndElement byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArrayType {
    /// 0x8B Int16.
    Int16,
    /// 0x8D Int32.
    Int32,
    /// 0x8F Int64.
    Int64,
    /// 0x91 Float.
    Float,
    /// 0x93 Double.
    Double,
    /// 0x95 Decimal.
    Decimal,
    /// 0x97 DateTime.
    DateTime,
    /// 0xAF TimeSpan.
    TimeSpan,
    /// 0xB1 Guid.
    Guid,
    /// 0xB5 Bool.
    Bool,
}

impl ArrayType {
    /// From the value type byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0x8B => Self::Int16,
            0x8D => Self::Int32,
            0x8F => Self::Int64,
            0x91 => Self::Float,
            0x93 => Self::Double,
            0x95 => Self::Decimal,
            0x97 => Self::DateTime,
            0xAF => Self::TimeSpan,
            0xB1 => Self::Guid,
            0xB5 => Self::Bool,
            _ => return None,
        })
    }

    /// The value type byte.
    pub fn byte(self) -> u8 {
        match self {
            Self::Int16 => 0x8B,
            Self::Int32 => 0x8D,
            Self::Int64 => 0x8F,
            Self::Float => 0x91,
            Self::Double => 0x93,
            Self::Decimal => 0x95,
            Self::DateTime => 0x97,
            Self::TimeSpan => 0xAF,
            Self::Guid => 0xB1,
            Self::Bool => 0xB5,
        }
    }

    /// Bytes per item.
    pub fn item_size(self) -> usize {
        match self {
            Self::Bool => 1,
            Self::Int16 => 2,
            Self::Int32 | Self::Float => 4,
            Self::Int64 | Self::Double | Self::DateTime | Self::TimeSpan => 8,
            Self::Decimal | Self::Guid => 16,
        }
    }
}

/// An Array record: `count` repetitions of one element, each holding one fixed-size value.
#[derive(Clone, Debug, PartialEq)]
pub struct Array<'a> {
    /// The repeated element.
    pub element: StartElement<'a>,
    /// Its attributes and namespace declarations.
    pub attributes: Vec<Attr<'a>>,
    /// Value type.
    pub kind: ArrayType,
    /// The items, `count * kind.item_size()` bytes, little-endian.
    pub data: Cow<'a, [u8]>,
}

impl Array<'_> {
    /// Number of items.
    pub fn count(&self) -> usize {
        self.data.len() / self.kind.item_size()
    }

    /// The items as text values. Items that fail validation (a decimal with a bad scale, an
    /// out-of-range DateTime) cannot occur: the parser checked them.
    pub fn items(&self) -> impl Iterator<Item = Text<'static>> + '_ {
        self.data
            .chunks_exact(self.kind.item_size())
            .filter_map(|c| item_text(self.kind, c))
    }

    /// Builds an array from items, all of which must have the array's type (after the
    /// smallest-form choice, `Text::Int32` and `Text::Zero` etc. are accepted for `Int32`).
    ///
    /// # Errors
    ///
    /// [`EncodeError::ArrayLength`] for no items, [`EncodeError::ArrayItemType`] for a mismatch.
    pub fn from_items<'b>(
        element: StartElement<'b>,
        attributes: Vec<Attr<'b>>,
        kind: ArrayType,
        items: &[Text<'_>],
    ) -> Result<Array<'b>, EncodeError> {
        if items.is_empty() || items.len() > varint::MAX as usize {
            return Err(EncodeError::ArrayLength { len: items.len() });
        }
        let mut data = Vec::with_capacity(items.len() * kind.item_size());
        for item in items {
            match (kind, item) {
                (ArrayType::Bool, Text::Bool(b)) => data.push(u8::from(*b)),
                (ArrayType::Bool, Text::True) => data.push(1),
                (ArrayType::Bool, Text::False) => data.push(0),
                (ArrayType::Int16 | ArrayType::Int32 | ArrayType::Int64, t) => {
                    let v = t.as_i64().ok_or(EncodeError::ArrayItemType)?;
                    match kind {
                        ArrayType::Int16 => data.extend_from_slice(
                            &i16::try_from(v)
                                .map_err(|_| EncodeError::ArrayItemType)?
                                .to_le_bytes(),
                        ),
                        ArrayType::Int32 => data.extend_from_slice(
                            &i32::try_from(v)
                                .map_err(|_| EncodeError::ArrayItemType)?
                                .to_le_bytes(),
                        ),
                        _ => data.extend_from_slice(&v.to_le_bytes()),
                    }
                }
                (ArrayType::Float, Text::Float(f)) => data.extend_from_slice(&f.to_le_bytes()),
                (ArrayType::Double, Text::Double(f)) => data.extend_from_slice(&f.to_le_bytes()),
                (ArrayType::Decimal, Text::Decimal(d)) => data.extend_from_slice(&d.to_bytes()),
                (ArrayType::DateTime, Text::DateTime(d)) => {
                    data.extend_from_slice(&d.to_wire().to_le_bytes())
                }
                (ArrayType::TimeSpan, Text::TimeSpan(t)) => {
                    data.extend_from_slice(&t.0.to_le_bytes())
                }
                (ArrayType::Guid, Text::Guid(g)) => data.extend_from_slice(&g.0),
                _ => return Err(EncodeError::ArrayItemType),
            }
        }
        Ok(Array {
            element,
            attributes,
            kind,
            data: Cow::Owned(data),
        })
    }
}

/// The value of a text record (MC-NBFX 2.2.3), without the WithEndElement flag.
#[derive(Clone, Debug, PartialEq)]
pub enum Text<'a> {
    /// 0x80 ZeroText: `0`.
    Zero,
    /// 0x82 OneText: `1`.
    One,
    /// 0x84 FalseText.
    False,
    /// 0x86 TrueText.
    True,
    /// 0x88 Int8Text.
    Int8(i8),
    /// 0x8A Int16Text.
    Int16(i16),
    /// 0x8C Int32Text.
    Int32(i32),
    /// 0x8E Int64Text.
    Int64(i64),
    /// 0x90 FloatText.
    Float(f32),
    /// 0x92 DoubleText.
    Double(f64),
    /// 0x94 DecimalText.
    Decimal(Decimal),
    /// 0x96 DateTimeText.
    DateTime(DateTime),
    /// 0x98/0x9A/0x9C Chars8/16/32Text (UTF-8; the length field is chosen by size).
    Chars(Cow<'a, str>),
    /// 0x9E/0xA0/0xA2 Bytes8/16/32Text, printed as base64.
    Bytes(Cow<'a, [u8]>),
    /// 0xA4 StartListText … 0xA6 EndListText: space-separated items, never nested.
    List(Vec<Self>),
    /// 0xA8 EmptyText.
    Empty,
    /// 0xAA DictionaryText.
    Dictionary(XmlString<'a>),
    /// 0xAC UniqueIdText: printed `urn:uuid:…`.
    UniqueId(Guid),
    /// 0xAE TimeSpanText.
    TimeSpan(TimeSpan),
    /// 0xB0 UuidText (GuidText).
    Guid(Guid),
    /// 0xB2 UInt64Text.
    UInt64(u64),
    /// 0xB4 BoolText.
    Bool(bool),
    /// 0xB6/0xB8/0xBA UnicodeChars8/16/32Text (UTF-16LE on the wire).
    UnicodeChars(Cow<'a, str>),
    /// 0xBC QNameDictionaryText: `prefix:name` with a one-letter prefix (index 0–25 = `a`–`z`).
    QName {
        /// Prefix letter index, 0–25.
        prefix: u8,
        /// Local name, from a dictionary.
        name: XmlString<'a>,
    },
}

impl<'a> Text<'a> {
    /// The record WCF writes for an integer: Zero, One, Int8, Int16, Int32 or Int64 (the
    /// smallest that holds it).
    pub fn from_i64(v: i64) -> Self {
        match v {
            0 => Self::Zero,
            1 => Self::One,
            _ => {
                if let Ok(v) = i8::try_from(v) {
                    Self::Int8(v)
                } else if let Ok(v) = i16::try_from(v) {
                    Self::Int16(v)
                } else if let Ok(v) = i32::try_from(v) {
                    Self::Int32(v)
                } else {
                    Self::Int64(v)
                }
            }
        }
    }

    /// The record WCF writes for an unsigned integer: as [`from_i64`](Self::from_i64), UInt64 only
    /// above `i64::MAX`.
    pub fn from_u64(v: u64) -> Self {
        i64::try_from(v).map_or(Self::UInt64(v), Self::from_i64)
    }

    /// The record WCF writes for a double: an integer record when the value is integral, Float
    /// when it survives a round trip through f32, else Double (NaN and ±Infinity are Double).
    pub fn from_f64(v: f64) -> Self {
        if v >= f64::from(f32::MIN) && v <= f64::from(f32::MAX) && f64::from(v as f32) == v {
            Self::from_f32(v as f32)
        } else {
            Self::Double(v)
        }
    }

    /// The record WCF writes for a float: an integer record when the value is integral, else Float.
    pub fn from_f32(v: f32) -> Self {
        // i64::MIN/MAX as f32 are ±2^63, so the range check is exact.
        if (-9.223_372e18..9.223_372e18).contains(&v) && (v as i64) as f32 == v {
            Self::from_i64(v as i64)
        } else {
            Self::Float(v)
        }
    }

    /// The record WCF writes for a bool: TrueText or FalseText.
    pub fn from_bool(v: bool) -> Self {
        if v { Self::True } else { Self::False }
    }

    /// The record WCF writes for a string: EmptyText for `""`, Zero/One for `"0"`/`"1"`, else
    /// UTF-8 Chars unless UTF-16 is shorter.
    pub fn from_string(v: impl Into<Cow<'a, str>>) -> Self {
        let v = v.into();
        match &*v {
            "" => Self::Empty,
            "0" => Self::Zero,
            "1" => Self::One,
            s if s.encode_utf16().count() * 2 < s.len() => Self::UnicodeChars(v),
            _ => Self::Chars(v),
        }
    }

    /// The value as an integer, for the integer records.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match self {
            Self::Zero => 0,
            Self::One => 1,
            Self::Int8(v) => i64::from(*v),
            Self::Int16(v) => i64::from(*v),
            Self::Int32(v) => i64::from(*v),
            Self::Int64(v) => *v,
            Self::UInt64(v) => i64::try_from(*v).ok()?,
            _ => return None,
        })
    }

    /// The raw bytes of a Bytes record.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// Copies borrowed data.
    pub fn into_owned(self) -> Text<'static> {
        match self {
            Self::Zero => Text::Zero,
            Self::One => Text::One,
            Self::False => Text::False,
            Self::True => Text::True,
            Self::Int8(v) => Text::Int8(v),
            Self::Int16(v) => Text::Int16(v),
            Self::Int32(v) => Text::Int32(v),
            Self::Int64(v) => Text::Int64(v),
            Self::Float(v) => Text::Float(v),
            Self::Double(v) => Text::Double(v),
            Self::Decimal(v) => Text::Decimal(v),
            Self::DateTime(v) => Text::DateTime(v),
            Self::Chars(v) => Text::Chars(Cow::Owned(v.into_owned())),
            Self::Bytes(v) => Text::Bytes(Cow::Owned(v.into_owned())),
            Self::List(v) => Text::List(v.into_iter().map(Text::into_owned).collect()),
            Self::Empty => Text::Empty,
            Self::Dictionary(v) => Text::Dictionary(v.into_owned()),
            Self::UniqueId(v) => Text::UniqueId(v),
            Self::TimeSpan(v) => Text::TimeSpan(v),
            Self::Guid(v) => Text::Guid(v),
            Self::UInt64(v) => Text::UInt64(v),
            Self::Bool(v) => Text::Bool(v),
            Self::UnicodeChars(v) => Text::UnicodeChars(Cow::Owned(v.into_owned())),
            Self::QName { prefix, name } => Text::QName {
                prefix,
                name: name.into_owned(),
            },
        }
    }
}

impl fmt::Display for Text<'_> {
    /// The text .NET's reader gives for the record (`XmlConvert` formats).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Zero => f.write_str("0"),
            Self::One => f.write_str("1"),
            Self::False | Self::Bool(false) => f.write_str("false"),
            Self::True | Self::Bool(true) => f.write_str("true"),
            Self::Int8(v) => write!(f, "{v}"),
            Self::Int16(v) => write!(f, "{v}"),
            Self::Int32(v) => write!(f, "{v}"),
            Self::Int64(v) => write!(f, "{v}"),
            Self::UInt64(v) => write!(f, "{v}"),
            Self::Float(v) => f.write_str(&format_float(*v)),
            Self::Double(v) => f.write_str(&format_double(*v)),
            Self::Decimal(v) => write!(f, "{v}"),
            Self::DateTime(v) => write!(f, "{v}"),
            Self::Chars(s) | Self::UnicodeChars(s) => f.write_str(s),
            Self::Bytes(b) => f.write_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            Self::List(items) => {
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{item}")?;
                }
                Ok(())
            }
            Self::Empty => Ok(()),
            Self::Dictionary(s) => f.write_str(&s.text),
            Self::UniqueId(g) => write!(f, "urn:uuid:{g}"),
            Self::TimeSpan(t) => write!(f, "{t}"),
            Self::Guid(g) => write!(f, "{g}"),
            Self::QName { prefix, name } => {
                write!(
                    f,
                    "{}:{}",
                    LETTERS.get(usize::from(*prefix)).unwrap_or(&"?"),
                    name.text
                )
            }
        }
    }
}

impl StartElement<'_> {
    /// Copies borrowed data.
    pub fn into_owned(self) -> StartElement<'static> {
        StartElement {
            prefix: Cow::Owned(self.prefix.into_owned()),
            name: self.name.into_owned(),
        }
    }
}

impl Attribute<'_> {
    /// Copies borrowed data.
    pub fn into_owned(self) -> Attribute<'static> {
        Attribute {
            prefix: Cow::Owned(self.prefix.into_owned()),
            name: self.name.into_owned(),
            value: self.value.into_owned(),
        }
    }
}

impl Xmlns<'_> {
    /// Copies borrowed data.
    pub fn into_owned(self) -> Xmlns<'static> {
        Xmlns {
            prefix: Cow::Owned(self.prefix.into_owned()),
            namespace: self.namespace.into_owned(),
        }
    }
}

impl Array<'_> {
    /// Copies borrowed data.
    pub fn into_owned(self) -> Array<'static> {
        Array {
            element: self.element.into_owned(),
            attributes: self.attributes.into_iter().map(Attr::into_owned).collect(),
            kind: self.kind,
            data: Cow::Owned(self.data.into_owned()),
        }
    }
}

impl Record<'_> {
    /// Copies borrowed data.
    pub fn into_owned(self) -> Record<'static> {
        match self {
            Self::EndElement => Record::EndElement,
            Self::Comment(c) => Record::Comment(Cow::Owned(c.into_owned())),
            Self::Array(a) => Record::Array(a.into_owned()),
            Self::Attribute(a) => Record::Attribute(a.into_owned()),
            Self::Xmlns(x) => Record::Xmlns(x.into_owned()),
            Self::Element(e) => Record::Element(e.into_owned()),
            Self::Text { text, end } => Record::Text {
                text: text.into_owned(),
                end,
            },
        }
    }

    /// Appends the record's bytes. Session-form strings get ids from `session` (and are written
    /// inline without one).
    ///
    /// # Errors
    ///
    /// See [`EncodeError`]: strings over 2^31 - 1 bytes, empty arrays, nested lists, QName
    /// prefixes that are not one letter.
    pub fn encode(
        &self,
        out: &mut Vec<u8>,
        session: Option<&mut WriterSession>,
    ) -> Result<(), EncodeError> {
        let mut enc = Encoder { out, session };
        enc.record(self)
    }
}

// ---------------------------------------------------------------------------------------------
// Parser.

/// Private nom error: never leaves the crate (converted to [`DecodeError`] with an offset).
#[derive(Debug)]
pub(crate) struct PErr<'a> {
    input: &'a [u8],
    kind: PKind,
}

#[derive(Debug)]
enum PKind {
    Truncated(&'static str),
    Unexpected(u8, &'static str),
    Invalid(&'static str),
    Varint,
    UnknownId(u32),
    Limit(Limit, usize),
}

impl<'a> nom::error::ParseError<&'a [u8]> for PErr<'a> {
    fn from_error_kind(input: &'a [u8], _kind: ErrorKind) -> Self {
        Self {
            input,
            kind: PKind::Truncated("more bytes"),
        }
    }

    fn append(_input: &'a [u8], _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

impl PErr<'_> {
    pub(crate) fn into_decode_error(self, total: usize) -> DecodeError {
        let offset = total.saturating_sub(self.input.len());
        match self.kind {
            PKind::Truncated(expected) => DecodeError::Truncated { offset, expected },
            PKind::Unexpected(record, context) => DecodeError::UnexpectedRecord {
                offset,
                record,
                context,
            },
            PKind::Invalid(what) => DecodeError::Invalid { offset, what },
            PKind::Varint => DecodeError::Varint { offset },
            PKind::UnknownId(id) => DecodeError::UnknownDictionaryId { offset, id },
            PKind::Limit(limit, max) => DecodeError::LimitExceeded { offset, limit, max },
        }
    }
}

type PResult<'a, T> = IResult<&'a [u8], T, PErr<'a>>;

fn fail<'a, T>(input: &'a [u8], kind: PKind) -> PResult<'a, T> {
    Err(nom::Err::Failure(PErr { input, kind }))
}

/// `n` bytes, or a truncation error naming `what`.
fn bytes<'a>(i: &'a [u8], n: usize, what: &'static str) -> PResult<'a, &'a [u8]> {
    take::<usize, &[u8], PErr<'a>>(n).parse(i).map_err(|_| {
        nom::Err::Failure(PErr {
            input: i,
            kind: PKind::Truncated(what),
        })
    })
}

fn array<'a, const N: usize>(i: &'a [u8], what: &'static str) -> PResult<'a, [u8; N]> {
    let (rest, b) = bytes(i, N, what)?;
    let mut out = [0u8; N];
    out.copy_from_slice(b);
    Ok((rest, out))
}

fn mb31<'a>(i: &'a [u8], what: &'static str) -> PResult<'a, u32> {
    match varint::decode(i) {
        varint::Decoded::Value(v, n) => Ok((&i[n..], v)),
        varint::Decoded::Incomplete => fail(&i[i.len()..], PKind::Truncated(what)),
        varint::Decoded::Overflow => fail(i, PKind::Varint),
    }
}

/// Parsing context: limits and the session dictionary, borrowed for the input's lifetime.
#[derive(Clone, Copy)]
pub(crate) struct RecordParser<'a> {
    pub(crate) limits: Limits,
    pub(crate) session: Option<&'a SessionDictionary>,
}

impl<'a> RecordParser<'a> {
    fn string(&self, i: &'a [u8], what: &'static str) -> PResult<'a, &'a str> {
        let (rest, len) = mb31(i, what)?;
        let len = len as usize;
        if len > self.limits.max_string_bytes {
            return fail(
                i,
                PKind::Limit(Limit::StringBytes, self.limits.max_string_bytes),
            );
        }
        let (rest, b) = bytes(rest, len, what)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok((rest, s)),
            Err(_) => fail(i, PKind::Invalid("UTF-8 string")),
        }
    }

    fn dict_string(&self, i: &'a [u8]) -> PResult<'a, XmlString<'a>> {
        let (rest, id) = mb31(i, "dictionary id")?;
        let id = DictionaryId(id);
        // Static strings point at the dictionary and session strings share the session's copy,
        // so a reference costs the same however long the string it names.
        let text = if id.is_static() {
            StaticDictionary::lookup(id).map(Str::Static)
        } else {
            self.session.and_then(|s| s.shared(id)).map(Str::Shared)
        };
        match text {
            Some(text) => Ok((
                rest,
                XmlString {
                    text,
                    form: StringForm::Dictionary(id),
                },
            )),
            None => fail(i, PKind::UnknownId(id.0)),
        }
    }

    fn name(&self, i: &'a [u8], dict: bool) -> PResult<'a, XmlString<'a>> {
        if dict {
            self.dict_string(i)
        } else {
            let (rest, s) = self.string(i, "name")?;
            Ok((rest, XmlString::inline(s)))
        }
    }

    /// Parses one record at the front of `i` (which must not be empty).
    pub(crate) fn record(&self, i: &'a [u8]) -> PResult<'a, Record<'a>> {
        let Some((&t, body)) = i.split_first() else {
            return fail(i, PKind::Truncated("record type"));
        };
        match t {
            0x01 => Ok((body, Record::EndElement)),
            0x02 => {
                let (rest, s) = self.string(body, "comment")?;
                Ok((rest, Record::Comment(Cow::Borrowed(s))))
            }
            0x03 => {
                let (rest, a) = self.array(i, body)?;
                Ok((rest, Record::Array(a)))
            }
            0x04..=0x3F => {
                let (rest, a) = self.attribute(i)?;
                Ok((
                    rest,
                    match a {
                        Attr::Attribute(a) => Record::Attribute(a),
                        Attr::Xmlns(x) => Record::Xmlns(x),
                    },
                ))
            }
            0x40..=0x77 => {
                let (rest, e) = self.element(i)?;
                Ok((rest, Record::Element(e)))
            }
            0x80..=0xBD => {
                let (rest, text) = self.text(i, true)?;
                Ok((
                    rest,
                    Record::Text {
                        text,
                        end: t & 1 == 1,
                    },
                ))
            }
            _ => fail(i, PKind::Unexpected(t, "element content")),
        }
    }

    fn element(&self, i: &'a [u8]) -> PResult<'a, StartElement<'a>> {
        let Some((&t, body)) = i.split_first() else {
            return fail(i, PKind::Truncated("element record"));
        };
        let (rest, prefix, name) = match t {
            0x40 => {
                let (r, n) = self.name(body, false)?;
                (r, Cow::Borrowed(""), n)
            }
            0x41 | 0x43 => {
                let (r, p) = self.string(body, "prefix")?;
                let (r, n) = self.name(r, t == 0x43)?;
                (r, Cow::Borrowed(p), n)
            }
            0x42 => {
                let (r, n) = self.name(body, true)?;
                (r, Cow::Borrowed(""), n)
            }
            0x44..=0x5D => {
                let (r, n) = self.name(body, true)?;
                (r, Cow::Borrowed(LETTERS[usize::from(t - 0x44)]), n)
            }
            0x5E..=0x77 => {
                let (r, n) = self.name(body, false)?;
                (r, Cow::Borrowed(LETTERS[usize::from(t - 0x5E)]), n)
            }
            _ => return fail(i, PKind::Unexpected(t, "array element")),
        };
        Ok((rest, StartElement { prefix, name }))
    }

    /// One attribute or xmlns record (type 0x04–0x3F) at the front of `i`.
    fn attribute(&self, i: &'a [u8]) -> PResult<'a, Attr<'a>> {
        let Some((&t, body)) = i.split_first() else {
            return fail(i, PKind::Truncated("attribute record"));
        };
        let xmlns = |rest, prefix: &'a str, namespace| {
            Ok((
                rest,
                Attr::Xmlns(Xmlns {
                    prefix: Cow::Borrowed(prefix),
                    namespace,
                }),
            ))
        };
        let (rest, prefix, name) = match t {
            0x04 | 0x06 => {
                let (r, n) = self.name(body, t == 0x06)?;
                (r, "", n)
            }
            0x05 | 0x07 => {
                let (r, p) = self.string(body, "prefix")?;
                let (r, n) = self.name(r, t == 0x07)?;
                (r, p, n)
            }
            0x08 | 0x0A => {
                let (r, ns) = self.name(body, t == 0x0A)?;
                return xmlns(r, "", ns);
            }
            0x09 | 0x0B => {
                let (r, p) = self.string(body, "prefix")?;
                if p.is_empty() {
                    return fail(i, PKind::Invalid("empty prefix in XmlnsAttribute"));
                }
                let (r, ns) = self.name(r, t == 0x0B)?;
                return xmlns(r, p, ns);
            }
            0x0C..=0x25 => {
                let (r, n) = self.name(body, true)?;
                (r, LETTERS[usize::from(t - 0x0C)], n)
            }
            0x26..=0x3F => {
                let (r, n) = self.name(body, false)?;
                (r, LETTERS[usize::from(t - 0x26)], n)
            }
            _ => return fail(i, PKind::Unexpected(t, "attribute")),
        };
        let (rest, value) = self.text(rest, false)?;
        Ok((
            rest,
            Attr::Attribute(Attribute {
                prefix: Cow::Borrowed(prefix),
                name,
                value,
            }),
        ))
    }

    /// A text record at the front of `i`. In content (`content = true`) the odd WithEndElement
    /// variants are allowed (the caller reads the flag); in attribute values only even ones.
    fn text(&self, i: &'a [u8], content: bool) -> PResult<'a, Text<'a>> {
        let Some((&t, body)) = i.split_first() else {
            return fail(i, PKind::Truncated("text record"));
        };
        let context = if content {
            "element content"
        } else {
            "attribute value"
        };
        if !(0x80..=0xBD).contains(&t)
            || (!content && t & 1 == 1)
            || t == 0xA5
            || t == 0xA6
            || t == 0xA7
        {
            return fail(i, PKind::Unexpected(t, context));
        }
        if t == 0xA4 {
            return self.list(body);
        }
        self.text_body(i, t & !1, body)
    }

    fn list(&self, mut i: &'a [u8]) -> PResult<'a, Text<'a>> {
        let mut items = Vec::new();
        loop {
            match i.first() {
                None => return fail(i, PKind::Truncated("EndListText")),
                Some(0xA6) => return Ok((&i[1..], Text::List(items))),
                Some(&t) if t & 1 == 1 || t == 0xA4 || !(0x80..=0xBD).contains(&t) => {
                    return fail(i, PKind::Unexpected(t, "list"));
                }
                Some(&t) => {
                    if items.len() >= self.limits.max_array_length {
                        return fail(
                            i,
                            PKind::Limit(Limit::ArrayLength, self.limits.max_array_length),
                        );
                    }
                    let (rest, item) = self.text_body(i, t, &i[1..])?;
                    items.push(item);
                    i = rest;
                }
            }
        }
    }

    /// The payload of the text record whose even type byte is `t`; `start` points at the type
    /// byte (for error offsets), `b` just after it.
    fn text_body(&self, start: &'a [u8], t: u8, b: &'a [u8]) -> PResult<'a, Text<'a>> {
        let max_bytes = self.limits.max_array_length;
        let max_chars = self.limits.max_string_bytes;
        Ok(match t {
            0x80 => (b, Text::Zero),
            0x82 => (b, Text::One),
            0x84 => (b, Text::False),
            0x86 => (b, Text::True),
            0x88 => {
                let (r, v) = array::<1>(b, "Int8Text")?;
                (r, Text::Int8(v[0] as i8))
            }
            0x8A => {
                let (r, v) = array::<2>(b, "Int16Text")?;
                (r, Text::Int16(i16::from_le_bytes(v)))
            }
            0x8C => {
                let (r, v) = array::<4>(b, "Int32Text")?;
                (r, Text::Int32(i32::from_le_bytes(v)))
            }
            0x8E => {
                let (r, v) = array::<8>(b, "Int64Text")?;
                (r, Text::Int64(i64::from_le_bytes(v)))
            }
            0x90 => {
                let (r, v) = array::<4>(b, "FloatText")?;
                (r, Text::Float(f32::from_le_bytes(v)))
            }
            0x92 => {
                let (r, v) = array::<8>(b, "DoubleText")?;
                (r, Text::Double(f64::from_le_bytes(v)))
            }
            0x94 => {
                let (r, v) = array::<16>(b, "DecimalText")?;
                match Decimal::from_bytes(v) {
                    Some(d) => (r, Text::Decimal(d)),
                    None => return fail(b, PKind::Invalid("decimal")),
                }
            }
            0x96 => {
                let (r, v) = array::<8>(b, "DateTimeText")?;
                match DateTime::from_wire(u64::from_le_bytes(v)) {
                    Some(d) => (r, Text::DateTime(d)),
                    None => return fail(b, PKind::Invalid("DateTime")),
                }
            }
            0x98 | 0x9A | 0x9C | 0x9E | 0xA0 | 0xA2 | 0xB6 | 0xB8 | 0xBA => {
                let (r, len) = match t {
                    0x98 | 0x9E | 0xB6 => {
                        let (r, v) = array::<1>(b, "length")?;
                        (r, usize::from(v[0]))
                    }
                    0x9A | 0xA0 | 0xB8 => {
                        let (r, v) = array::<2>(b, "length")?;
                        (r, usize::from(u16::from_le_bytes(v)))
                    }
                    _ => {
                        let (r, v) = array::<4>(b, "length")?;
                        match usize::try_from(i32::from_le_bytes(v)) {
                            Ok(len) => (r, len),
                            Err(_) => return fail(b, PKind::Invalid("negative length")),
                        }
                    }
                };
                let is_bytes = matches!(t, 0x9E | 0xA0 | 0xA2);
                let max = if is_bytes { max_bytes } else { max_chars };
                if len > max {
                    let limit = if is_bytes {
                        Limit::ArrayLength
                    } else {
                        Limit::StringBytes
                    };
                    return fail(start, PKind::Limit(limit, max));
                }
                let (r, data) = bytes(r, len, "text data")?;
                match t {
                    0x98 | 0x9A | 0x9C => match std::str::from_utf8(data) {
                        Ok(s) => (r, Text::Chars(Cow::Borrowed(s))),
                        Err(_) => return fail(start, PKind::Invalid("UTF-8 text")),
                    },
                    0x9E | 0xA0 | 0xA2 => (r, Text::Bytes(Cow::Borrowed(data))),
                    _ => match decode_utf16(data) {
                        Some(s) => (r, Text::UnicodeChars(Cow::Owned(s))),
                        None => return fail(start, PKind::Invalid("UTF-16 text")),
                    },
                }
            }
            0xA8 => (b, Text::Empty),
            0xAA => {
                let (r, s) = self.dict_string(b)?;
                (r, Text::Dictionary(s))
            }
            0xAC | 0xB0 => {
                let (r, v) = array::<16>(b, "GUID")?;
                (
                    r,
                    if t == 0xAC {
                        Text::UniqueId(Guid(v))
                    } else {
                        Text::Guid(Guid(v))
                    },
                )
            }
            0xAE => {
                let (r, v) = array::<8>(b, "TimeSpanText")?;
                (r, Text::TimeSpan(TimeSpan(i64::from_le_bytes(v))))
            }
            0xB2 => {
                let (r, v) = array::<8>(b, "UInt64Text")?;
                (r, Text::UInt64(u64::from_le_bytes(v)))
            }
            0xB4 => {
                let (r, v) = array::<1>(b, "BoolText")?;
                match v[0] {
                    0 => (r, Text::Bool(false)),
                    1 => (r, Text::Bool(true)),
                    _ => return fail(b, PKind::Invalid("BoolText value")),
                }
            }
            0xBC => {
                let (r, p) = array::<1>(b, "QName prefix")?;
                if p[0] >= 26 {
                    return fail(b, PKind::Invalid("QName prefix index"));
                }
                let (r, name) = self.dict_string(r)?;
                (r, Text::QName { prefix: p[0], name })
            }
            _ => return fail(start, PKind::Unexpected(t, "text")),
        })
    }

    fn array(&self, start: &'a [u8], body: &'a [u8]) -> PResult<'a, Array<'a>> {
        match body.first() {
            Some(0x40..=0x77) => {}
            Some(&t) => return fail(body, PKind::Unexpected(t, "array element")),
            None => return fail(body, PKind::Truncated("array element")),
        }
        let (mut i, element) = self.element(body)?;
        let mut attributes = Vec::new();
        while let Some(0x04..=0x3F) = i.first() {
            let (rest, a) = self.attribute(i)?;
            attributes.push(a);
            i = rest;
        }
        match i.first() {
            Some(0x01) => i = &i[1..],
            Some(&t) => return fail(i, PKind::Unexpected(t, "array (expected EndElement)")),
            None => return fail(i, PKind::Truncated("array EndElement")),
        }
        let (i, kind) = match i.first() {
            Some(&t) => match ArrayType::from_byte(t) {
                Some(k) => (&i[1..], k),
                None => return fail(i, PKind::Unexpected(t, "array value type")),
            },
            None => return fail(i, PKind::Truncated("array value type")),
        };
        let (rest, count) = mb31(i, "array count")?;
        if count == 0 {
            return fail(i, PKind::Invalid("array count 0"));
        }
        if count as usize > self.limits.max_array_length {
            return fail(
                start,
                PKind::Limit(Limit::ArrayLength, self.limits.max_array_length),
            );
        }
        let len = (count as usize).saturating_mul(kind.item_size());
        let (rest, data) = bytes(rest, len, "array items")?;
        // Validate items now so `Array::items` never meets a bad one.
        if data
            .chunks_exact(kind.item_size())
            .any(|c| item_text(kind, c).is_none())
        {
            return fail(rest, PKind::Invalid("array item"));
        }
        Ok((
            rest,
            Array {
                element,
                attributes,
                kind,
                data: Cow::Borrowed(data),
            },
        ))
    }
}

fn item_text(kind: ArrayType, c: &[u8]) -> Option<Text<'static>> {
    let a8 = |c: &[u8]| <[u8; 8]>::try_from(c).ok();
    Some(match kind {
        ArrayType::Bool => match c.first()? {
            0 => Text::Bool(false),
            1 => Text::Bool(true),
            _ => return None,
        },
        ArrayType::Int16 => Text::Int16(i16::from_le_bytes(c.try_into().ok()?)),
        ArrayType::Int32 => Text::Int32(i32::from_le_bytes(c.try_into().ok()?)),
        ArrayType::Int64 => Text::Int64(i64::from_le_bytes(a8(c)?)),
        ArrayType::Float => Text::Float(f32::from_le_bytes(c.try_into().ok()?)),
        ArrayType::Double => Text::Double(f64::from_le_bytes(a8(c)?)),
        ArrayType::Decimal => Text::Decimal(Decimal::from_bytes(c.try_into().ok()?)?),
        ArrayType::DateTime => Text::DateTime(DateTime::from_wire(u64::from_le_bytes(a8(c)?))?),
        ArrayType::TimeSpan => Text::TimeSpan(TimeSpan(i64::from_le_bytes(a8(c)?))),
        ArrayType::Guid => Text::Guid(Guid(c.try_into().ok()?)),
    })
}

fn decode_utf16(data: &[u8]) -> Option<String> {
    if !data.len().is_multiple_of(2) {
        return None;
    }
    let units = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// Encoder.

pub(crate) struct Encoder<'o, 's> {
    pub(crate) out: &'o mut Vec<u8>,
    pub(crate) session: Option<&'s mut WriterSession>,
}

/// A string resolved for writing: a dictionary id or the literal.
enum Resolved<'t> {
    Id(u32),
    Inline(&'t str),
}

impl Encoder<'_, '_> {
    fn resolve<'t>(&mut self, s: &'t XmlString<'_>) -> Resolved<'t> {
        match s.form {
            StringForm::Inline => Resolved::Inline(s.text.as_ref()),
            StringForm::Dictionary(id) if id.is_static() => Resolved::Id(id.0),
            StringForm::Dictionary(_) => {
                match self.session.as_deref_mut().and_then(|w| w.id_for(&s.text)) {
                    Some(id) => Resolved::Id(id.0),
                    None => Resolved::Inline(s.text.as_ref()),
                }
            }
        }
    }

    fn string(&mut self, s: &str) -> Result<(), EncodeError> {
        let len = u32::try_from(s.len()).ok().filter(|&l| l <= varint::MAX);
        let len = len.ok_or(EncodeError::StringTooLong { len: s.len() })?;
        varint::encode(len, self.out);
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn resolved(&mut self, r: &Resolved<'_>) -> Result<(), EncodeError> {
        match r {
            Resolved::Id(id) => {
                varint::encode(*id, self.out);
                Ok(())
            }
            Resolved::Inline(s) => self.string(s),
        }
    }

    pub(crate) fn record(&mut self, r: &Record<'_>) -> Result<(), EncodeError> {
        match r {
            Record::EndElement => {
                self.out.push(0x01);
                Ok(())
            }
            Record::Comment(c) => {
                self.out.push(0x02);
                self.string(c)
            }
            Record::Array(a) => self.array(a),
            Record::Attribute(a) => self.attribute(a),
            Record::Xmlns(x) => self.xmlns(x),
            Record::Element(e) => self.element(e),
            Record::Text { text, end } => self.text(text, *end),
        }
    }

    pub(crate) fn element(&mut self, e: &StartElement<'_>) -> Result<(), EncodeError> {
        let name = self.resolve(&e.name);
        let dict = matches!(name, Resolved::Id(_));
        match letter(&e.prefix) {
            _ if e.prefix.is_empty() => self.out.push(if dict { 0x42 } else { 0x40 }),
            Some(n) => self.out.push(if dict { 0x44 + n } else { 0x5E + n }),
            None => {
                self.out.push(if dict { 0x43 } else { 0x41 });
                self.string(&e.prefix)?;
            }
        }
        self.resolved(&name)
    }

    pub(crate) fn attribute(&mut self, a: &Attribute<'_>) -> Result<(), EncodeError> {
        let name = self.resolve(&a.name);
        let dict = matches!(name, Resolved::Id(_));
        match letter(&a.prefix) {
            _ if a.prefix.is_empty() => self.out.push(if dict { 0x06 } else { 0x04 }),
            Some(n) => self.out.push(if dict { 0x0C + n } else { 0x26 + n }),
            None => {
                self.out.push(if dict { 0x07 } else { 0x05 });
                self.string(&a.prefix)?;
            }
        }
        self.resolved(&name)?;
        // Attribute values have no WithEndElement variant.
        self.text(&a.value, false)
    }

    pub(crate) fn xmlns(&mut self, x: &Xmlns<'_>) -> Result<(), EncodeError> {
        let ns = self.resolve(&x.namespace);
        let dict = matches!(ns, Resolved::Id(_));
        if x.prefix.is_empty() {
            self.out.push(if dict { 0x0A } else { 0x08 });
        } else {
            self.out.push(if dict { 0x0B } else { 0x09 });
            self.string(&x.prefix)?;
        }
        self.resolved(&ns)
    }

    pub(crate) fn array(&mut self, a: &Array<'_>) -> Result<(), EncodeError> {
        let count = a.count();
        if count == 0
            || count > varint::MAX as usize
            || !a.data.len().is_multiple_of(a.kind.item_size())
        {
            return Err(EncodeError::ArrayLength { len: count });
        }
        self.out.push(0x03);
        self.element(&a.element)?;
        for attr in &a.attributes {
            match attr {
                Attr::Attribute(x) => self.attribute(x)?,
                Attr::Xmlns(x) => self.xmlns(x)?,
            }
        }
        self.out.push(0x01);
        self.out.push(a.kind.byte());
        varint::encode(count as u32, self.out);
        self.out.extend_from_slice(&a.data);
        Ok(())
    }

    fn sized(&mut self, base: u8, data: &[u8], end: bool) -> Result<(), EncodeError> {
        let e = u8::from(end);
        if let Ok(n) = u8::try_from(data.len()) {
            self.out.extend_from_slice(&[base | e, n]);
        } else if let Ok(n) = u16::try_from(data.len()) {
            self.out.push((base + 2) | e);
            self.out.extend_from_slice(&n.to_le_bytes());
        } else {
            let n = i32::try_from(data.len())
                .map_err(|_| EncodeError::StringTooLong { len: data.len() })?;
            self.out.push((base + 4) | e);
            self.out.extend_from_slice(&n.to_le_bytes());
        }
        self.out.extend_from_slice(data);
        Ok(())
    }

    pub(crate) fn text(&mut self, t: &Text<'_>, end: bool) -> Result<(), EncodeError> {
        let e = u8::from(end);
        let out = &mut *self.out;
        match t {
            Text::Zero => out.push(0x80 | e),
            Text::One => out.push(0x82 | e),
            Text::False => out.push(0x84 | e),
            Text::True => out.push(0x86 | e),
            Text::Int8(v) => out.extend_from_slice(&[0x88 | e, *v as u8]),
            Text::Int16(v) => {
                out.push(0x8A | e);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Text::Int32(v) => {
                out.push(0x8C | e);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Text::Int64(v) => {
                out.push(0x8E | e);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Text::Float(v) => {
                out.push(0x90 | e);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Text::Double(v) => {
                out.push(0x92 | e);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Text::Decimal(v) => {
                out.push(0x94 | e);
                out.extend_from_slice(&v.to_bytes());
            }
            Text::DateTime(v) => {
                out.push(0x96 | e);
                out.extend_from_slice(&v.to_wire().to_le_bytes());
            }
            Text::Chars(s) => return self.sized(0x98, s.as_bytes(), end),
            Text::Bytes(b) => return self.sized(0x9E, b, end),
            Text::UnicodeChars(s) => {
                let utf16: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
                return self.sized(0xB6, &utf16, end);
            }
            Text::List(items) => {
                out.push(0xA4);
                for item in items {
                    if matches!(item, Text::List(_)) {
                        return Err(EncodeError::NestedList);
                    }
                    self.text(item, false)?;
                }
                self.out.push(0xA6);
                // 0xA7 is reserved: a list followed by the end of its element needs 0x01.
                if end {
                    self.out.push(0x01);
                }
            }
            Text::Empty => out.push(0xA8 | e),
            Text::Dictionary(s) => match self.resolve(s) {
                Resolved::Id(id) => {
                    self.out.push(0xAA | e);
                    varint::encode(id, self.out);
                }
                Resolved::Inline(text) => return self.sized(0x98, text.as_bytes(), end),
            },
            Text::UniqueId(g) => {
                out.push(0xAC | e);
                out.extend_from_slice(&g.0);
            }
            Text::TimeSpan(v) => {
                out.push(0xAE | e);
                out.extend_from_slice(&v.0.to_le_bytes());
            }
            Text::Guid(g) => {
                out.push(0xB0 | e);
                out.extend_from_slice(&g.0);
            }
            Text::UInt64(v) => {
                out.push(0xB2 | e);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Text::Bool(v) => out.extend_from_slice(&[0xB4 | e, u8::from(*v)]),
            Text::QName { prefix, name } => {
                if *prefix >= 26 {
                    return Err(EncodeError::QNamePrefix {
                        prefix: prefix.to_string(),
                    });
                }
                match self.resolve(name) {
                    Resolved::Id(id) => {
                        self.out.extend_from_slice(&[0xBC | e, *prefix]);
                        varint::encode(id, self.out);
                    }
                    Resolved::Inline(text) => {
                        let s = format!("{}:{text}", LETTERS[usize::from(*prefix)]);
                        return self.sized(0x98, s.as_bytes(), end);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Index 0–25 of a one-letter lowercase prefix.
fn letter(prefix: &str) -> Option<u8> {
    match prefix.as_bytes() {
        [c @ b'a'..=b'z'] => Some(c - b'a'),
        _ => None,
    }
}
