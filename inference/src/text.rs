//! The strings a request carries, checked the same way by every endpoint, and stated in the OpenAPI
//! document from the same constants: a request the document allows is never refused for its form.
//!
//! | field | the handler | the schema |
//! |---|---|---|
//! | a customer's message (`text`) | trimmed; not empty; at most [`MAX_TEXT_CHARS`] characters | `minLength` 1, `maxLength` [`MAX_TEXT_CHARS`], a non-space character |
//! | an item code or a customer number (`items[]`, `customer_id`) | trimmed; 1 to [`MAX_ITEM_BYTES`] bytes; no control characters | printable ASCII, no space at either end, 1 to [`MAX_ITEM_BYTES`] characters |
//!
//! The schema may be stricter than the handler (a customer number in Chinese characters is served but
//! not promised), never looser.

use hearth_models::recommend::MAX_ITEM_BYTES;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;

use crate::{ApiError, MAX_TEXT_CHARS};

/// Trims a request's text and checks it can be read: not empty, at most [`MAX_TEXT_CHARS`]
/// characters (counting stops one past the limit, so a huge text costs no more than a long one).
pub fn checked_text(text: &str) -> Result<&str, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::bad("empty_text", "text is empty"));
    }
    if text.chars().take(MAX_TEXT_CHARS + 1).count() > MAX_TEXT_CHARS {
        return Err(ApiError::bad(
            "text_too_long",
            format!("text has more than {MAX_TEXT_CHARS} characters, the limit"),
        ));
    }
    Ok(text)
}

/// [`checked_text`] for text that arrived as bytes (gRPC), naming where bad UTF-8 starts.
pub fn checked_utf8(bytes: &[u8]) -> Result<&str, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad(
            "invalid_utf8",
            format!("text is not valid UTF-8 (bad byte at offset {})", e.valid_up_to()),
        )
    })?;
    checked_text(text)
}

/// A string with at least one character that is not white space.
const NOT_BLANK: &str = r"\S";

/// An item code or customer number: printable ASCII without a space at either end.
fn code_pattern() -> String {
    format!("^[!-~]([ -~]{{0,{}}}[!-~])?$", MAX_ITEM_BYTES - 2)
}

fn string(nullable: bool) -> ObjectBuilder {
    let t = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new().schema_type(t)
}

fn text(nullable: bool) -> Schema {
    string(nullable)
        .min_length(Some(1))
        .max_length(Some(MAX_TEXT_CHARS))
        .pattern(Some(NOT_BLANK))
        .description(Some(format!(
            "The customer's message: 1 to {MAX_TEXT_CHARS} characters, not only white space (it is trimmed)."
        )))
        .build()
        .into()
}

/// The schema of a customer's message.
pub fn text_schema() -> RefOr<Schema> {
    RefOr::T(text(false))
}

/// [`text_schema`], or `null`.
pub fn optional_text_schema() -> RefOr<Schema> {
    RefOr::T(text(true))
}

fn code(nullable: bool, what: &str) -> Schema {
    string(nullable)
        .min_length(Some(1))
        .max_length(Some(MAX_ITEM_BYTES))
        .pattern(Some(code_pattern()))
        .description(Some(format!("{what}: 1 to {MAX_ITEM_BYTES} printable characters.")))
        .build()
        .into()
}

/// The schema of a customer number as the institution knows it, or `null`.
pub fn optional_customer_schema() -> RefOr<Schema> {
    RefOr::T(code(true, "The customer, as this institution numbers them"))
}

/// The schema of a list of at most `max` item codes.
pub fn items_schema(max: usize) -> ArrayBuilder {
    ArrayBuilder::new().items(RefOr::T(code(false, "An item (stock code)"))).max_items(Some(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_checked() {
        assert_eq!(checked_text("  hi ").unwrap(), "hi");
        assert_eq!(checked_text(" \n ").unwrap_err().reason(), "empty_text");
        assert_eq!(checked_text(&"a".repeat(MAX_TEXT_CHARS + 1)).unwrap_err().reason(), "text_too_long");
        assert_eq!(checked_utf8(&[b'o', b'k', 0xff]).unwrap_err().reason(), "invalid_utf8");
        assert_eq!(checked_utf8("查询余额".as_bytes()).unwrap(), "查询余额");
    }

    #[test]
    fn the_code_pattern_is_what_the_handlers_accept() {
        assert_eq!(code_pattern(), "^[!-~]([ -~]{0,62}[!-~])?$");
        // Its longest match is MAX_ITEM_BYTES printable ASCII characters, one byte each.
        let longest = format!("A{}B", " ".repeat(MAX_ITEM_BYTES - 2));
        assert_eq!(longest.len(), MAX_ITEM_BYTES);
    }
}
