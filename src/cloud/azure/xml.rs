//! The Blob service's XML answers, read with a maintained XML parser (roxmltree): a
//! `Get Page Ranges` page list (checked: aligned, ascending, disjoint, below the largest upload)
//! and an error body's `Code` and `Message`. Untrusted input: fuzzed by `page_list_xml`.

use super::super::pageblob::PAGE;

/// One answer of `Get Page Ranges`: `(offset, len)` ranges and the next marker.
pub type PageList = (Vec<(u64, u64)>, Option<String>);

/// The longest code or message kept from an answer, in characters.
const MAX_TEXT: usize = 300;

/// Parses `xml` (a leading byte-order mark, as Azure sends one, is allowed).
fn document(xml: &str) -> Result<roxmltree::Document<'_>, String> {
    roxmltree::Document::parse(xml.trim_start_matches('\u{feff}'))
        .map_err(|e| format!("the answer is not well-formed XML: {e}"))
}

/// The text of `node`'s first child element named `tag`.
fn child_text<'a>(node: roxmltree::Node<'a, '_>, tag: &str) -> Option<&'a str> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == tag)
        .map(|c| c.text().unwrap_or(""))
}

/// Parses a `Get Page Ranges` answer: the `PageRange` elements as `(offset, len)` and the
/// `NextMarker`, if any. Ranges must be page aligned, ascending and disjoint; `ClearRange`
/// elements (of a diff listing) are skipped.
///
/// # Errors
/// A message saying what is wrong with the document.
pub fn parse_page_list(xml: &str) -> Result<PageList, String> {
    let doc = document(xml)?;
    let list = doc.root_element();
    if list.tag_name().name() != "PageList" {
        return Err("no <PageList> element in the Get Page Ranges answer".to_string());
    }
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut next = None;
    for node in list.children().filter(roxmltree::Node::is_element) {
        match node.tag_name().name() {
            "PageRange" => {
                let num = |tag: &str| -> Result<u64, String> {
                    let t = child_text(node, tag)
                        .ok_or_else(|| format!("<PageRange> without <{tag}>"))?;
                    t.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("<{tag}> is not a number: {:?}", truncate(t)))
                };
                let (s, e) = (num("Start")?, num("End")?);
                // A managed disk's upload blob can reach 32 TiB + 512 bytes, past a page
                // blob's 8 TiB.
                if e >= crate::check::MAX_MANAGED_DISK_UPLOAD {
                    return Err(format!(
                        "page range {s}-{e} goes past the largest managed-disk upload"
                    ));
                }
                if !s.is_multiple_of(PAGE) || e < s || !(e - s + 1).is_multiple_of(PAGE) {
                    return Err(format!("page range {s}-{e} is not page aligned"));
                }
                if let Some(&(po, pl)) = out.last()
                    && po + pl > s
                {
                    return Err(format!(
                        "page range {s}-{e} overlaps or precedes the one before"
                    ));
                }
                out.push((s, e - s + 1));
            }
            "NextMarker" => {
                next = node
                    .text()
                    .map(|m| m.trim().to_string())
                    .filter(|m| !m.is_empty());
            }
            _ => {}
        }
    }
    Ok((out, next))
}

/// The `Code` and `Message` of an Azure error body (`<Error><Code>…</Code><Message>…`), if it
/// has them; nothing for a body that is not XML.
pub fn parse_error_body(xml: &str) -> (Option<String>, Option<String>) {
    let Ok(doc) = document(xml) else {
        return (None, None);
    };
    let err = doc.root_element();
    let get = |tag: &str| child_text(err, tag).map(|s| truncate(s.trim()).to_string());
    (get("Code"), get("Message"))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(MAX_TEXT) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_lists_parse_and_bad_ones_are_refused() {
        let xml = "<?xml version=\"1.0\"?><PageList><PageRange><Start>0</Start><End>511</End>\
                   </PageRange><ClearRange><Start>512</Start><End>1023</End></ClearRange>\
                   <PageRange><Start>4096</Start><End>8191</End></PageRange>\
                   <NextMarker>abc</NextMarker></PageList>";
        assert_eq!(
            parse_page_list(xml).unwrap(),
            (vec![(0, 512), (4096, 4096)], Some("abc".into()))
        );
        assert_eq!(
            parse_page_list("<PageList></PageList>").unwrap(),
            (vec![], None)
        );
        assert_eq!(
            parse_page_list("\u{feff}<PageList><NextMarker /></PageList>").unwrap(),
            (vec![], None)
        );
        for bad in [
            "",
            "<PageList><PageRange><Start>1</Start><End>512</End></PageRange></PageList>",
            "<PageList><PageRange><Start>0</Start></PageRange></PageList>",
            "<PageList><PageRange><Start>x</Start><End>511</End></PageRange></PageList>",
            "<PageList><PageRange><Start>512</Start><End>511</End></PageRange></PageList>",
            "<PageList><PageRange><Start>0</Start><End>1023</End></PageRange>\
             <PageRange><Start>512</Start><End>1023</End></PageRange></PageList>",
            "<PageList><PageRange><Start>0</Start><End>511</End>",
            "<PageList><PageRange><Start>0</Start><End>18446744073709551615</End></PageRange></PageList>",
            "<Other><PageRange><Start>0</Start><End>511</End></PageRange></Other>",
        ] {
            assert!(parse_page_list(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_error_body("<Error><Code>ServerBusy</Code><Message>m</Message></Error>"),
            (Some("ServerBusy".into()), Some("m".into()))
        );
        assert_eq!(
            parse_error_body(
                "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>BlobNotFound\
                 </Code><Message>The specified blob does not exist.\nRequestId:x</Message></Error>"
            )
            .0
            .as_deref(),
            Some("BlobNotFound")
        );
        assert_eq!(parse_error_body("not xml"), (None, None));
        let long = format!("<Error><Message>{}</Message></Error>", "x".repeat(1000));
        assert_eq!(parse_error_body(&long).1.map(|m| m.len()), Some(MAX_TEXT));
    }
}
