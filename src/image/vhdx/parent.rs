//! A differencing VHDX's parent: found through the locator, its data write GUID checked.

use super::*;

/// Finds, opens and checks the parent of the differencing VHDX at `path`: by `relative_path`
/// (from the child's folder), then `absolute_win32_path`; its data write GUID must be the
/// child's `parent_linkage` (or `parent_linkage2`).
pub(super) fn open_parent(path: &Path, item: &[u8], depth: usize) -> Result<Vhdx> {
    if depth + 1 >= MAX_CHAIN_DEPTH {
        return Err(Error::unsupported(format!(
            "differencing VHDX chain deeper than {MAX_CHAIN_DEPTH}: refusing (a loop?)"
        )));
    }
    let kv = locator_entries(item)?;
    let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let norm = |g: &str| {
        g.trim_matches(|c| c == '{' || c == '}')
            .to_ascii_uppercase()
    };
    let linkage: Vec<String> = ["parent_linkage", "parent_linkage2"]
        .iter()
        .filter_map(|k| get(k))
        .map(|g| norm(&g))
        .collect();
    if linkage.is_empty() {
        return Err(Error::invalid(
            "differencing VHDX: the parent locator has no parent_linkage",
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tried = Vec::new();
    for key in ["relative_path", "absolute_win32_path"] {
        let Some(v) = get(key) else { continue };
        let v = v.replace('\\', "/");
        let p = Path::new(&v);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        };
        if p.exists() {
            let parent = Vhdx::open_at_depth(&p, depth + 1).path(&p)?;
            let id = show_guid(&parent.header.data_write_guid);
            if !linkage.contains(&id) {
                return Err(Error::invalid(format!(
                    "differencing VHDX: {} has data write GUID {id}, but the child expects {}",
                    p.display(),
                    linkage.join(" or ")
                )));
            }
            return Ok(parent);
        }
        tried.push(p.display().to_string());
    }
    Err(Error::invalid(format!(
        "differencing VHDX: parent {} not found; tried {}",
        linkage[0],
        if tried.is_empty() {
            "no usable path in the parent locator".to_string()
        } else {
            tried.join(", ")
        }
    )))
}
