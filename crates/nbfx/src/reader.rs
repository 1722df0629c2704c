//! The zero-copy record reader.

use crate::{
    dictionary::SessionDictionary,
    error::DecodeError,
    limits::{Limit, Limits},
    record::{Record, RecordParser},
};

/// Reads an MC-NBFX document record by record, borrowing from the input.
///
/// Besides parsing each record it checks the document structure the .NET reader checks:
/// attribute records only directly after an element record or another attribute, no text or
/// EndElement outside the root element, nesting depth within [`Limits::max_depth`], every element
/// closed at the end. It does not resolve namespace prefixes; [`Document`](crate::Document) does.
///
/// ```
/// use ferry_nbfx::{Reader, Record};
///
/// // <s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body/></s:Envelope>
/// let bytes = [0x56, 0x02, 0x0B, 0x01, 0x73, 0x04, 0x56, 0x0E, 0x01, 0x01];
/// let records: Vec<Record<'_>> = Reader::new(&bytes).collect::<Result<_, _>>()?;
/// assert_eq!(records.len(), 5);
/// # Ok::<(), ferry_nbfx::DecodeError>(())
/// ```
#[derive(Clone)]
pub struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    depth: usize,
    /// True right after an element record (or its attributes): attributes may follow.
    in_start_tag: bool,
    /// True once an error was returned or the end was reached.
    done: bool,
    parser: RecordParser<'a>,
}

impl<'a> Reader<'a> {
    /// A reader over a document that uses only the static dictionary (`application/soap+msbin1`).
    pub fn new(input: &'a [u8]) -> Self {
        Self::build(input, None, Limits::default())
    }

    /// A reader over a document whose odd dictionary ids refer to `session`
    /// (`application/soap+msbinsession1`, after [`SessionDictionary::read_table`]).
    pub fn with_session(input: &'a [u8], session: &'a SessionDictionary) -> Self {
        Self::build(input, Some(session), Limits::default())
    }

    /// Replaces the default [`Limits`].
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.parser.limits = limits;
        self
    }

    fn build(input: &'a [u8], session: Option<&'a SessionDictionary>, limits: Limits) -> Self {
        Self {
            input,
            pos: 0,
            depth: 0,
            in_start_tag: false,
            done: false,
            parser: RecordParser { limits, session },
        }
    }

    /// Offset of the next record.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Current element nesting depth.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The next record, `Ok(None)` at the end of a complete document.
    ///
    /// # Errors
    ///
    /// Any [`DecodeError`]; after an error the reader returns `Ok(None)`.
    pub fn next_record(&mut self) -> Result<Option<Record<'a>>, DecodeError> {
        if self.done {
            return Ok(None);
        }
        let result = self.step();
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    fn step(&mut self) -> Result<Option<Record<'a>>, DecodeError> {
        let limits = self.parser.limits;
        if self.input.len() > limits.max_document_bytes {
            return Err(DecodeError::LimitExceeded {
                offset: 0,
                limit: Limit::DocumentBytes,
                max: limits.max_document_bytes,
            });
        }
        let rest = &self.input[self.pos..];
        let Some(&t) = rest.first() else {
            if self.depth > 0 {
                return Err(DecodeError::Truncated {
                    offset: self.pos,
                    expected: "EndElement",
                });
            }
            return Ok(None);
        };
        let offset = self.pos;
        let unexpected = |context| {
            Err(DecodeError::UnexpectedRecord {
                offset,
                record: t,
                context,
            })
        };
        let is_attribute = (0x04..=0x3F).contains(&t);
        if is_attribute && !self.in_start_tag {
            return unexpected("element content (attribute outside a start tag)");
        }
        let (remaining, record) = match self.parser.record(rest) {
            Ok(ok) => ok,
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
                return Err(e.into_decode_error(self.input.len()));
            }
            Err(nom::Err::Incomplete(_)) => {
                return Err(DecodeError::Truncated {
                    offset,
                    expected: "record",
                });
            }
        };
        match &record {
            Record::Element(_) | Record::Array(_) => {
                if self.depth >= limits.max_depth {
                    return Err(DecodeError::LimitExceeded {
                        offset,
                        limit: Limit::Depth,
                        max: limits.max_depth,
                    });
                }
                if matches!(record, Record::Element(_)) {
                    self.depth += 1;
                }
            }
            Record::EndElement => {
                if self.depth == 0 {
                    return unexpected("top level (EndElement without element)");
                }
                self.depth -= 1;
            }
            Record::Text { end, .. } => {
                if self.depth == 0 {
                    return unexpected("top level (text outside the root element)");
                }
                if *end {
                    self.depth -= 1;
                }
            }
            Record::Attribute(_) | Record::Xmlns(_) | Record::Comment(_) => {}
        }
        self.in_start_tag = matches!(
            record,
            Record::Element(_) | Record::Attribute(_) | Record::Xmlns(_)
        );
        self.pos = self.input.len() - remaining.len();
        Ok(Some(record))
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Record<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}
