//! The log and CLI messages `docs/troubleshooting.md` quotes are real: every backquoted
//! message occurs in the source tree (with its placeholders taken as wildcards), so a reworded
//! error fails this test instead of leaving admins grepping their journal for text lunard
//! never prints.

use std::path::{Path, PathBuf};

/// Backquoted spans of a Markdown text (inline code only; the file has no fenced blocks).
fn code_spans(md: &str) -> Vec<String> {
    md.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.replace('\n', " "))
        .collect()
}

/// Whether a span is a message quote rather than a command, metric, flag, key or path.
/// Single tokens (`auth`, `chap:`, `pool.path`, `--force`, `/metrics`) are names, not
/// messages; commands and metric expressions start with a known word.
fn is_message(span: &str) -> bool {
    const NOT_MESSAGES: &[&str] = &[
        "lunarctl ",
        "journalctl ",
        "iscsiadm ",
        "lunar_",
        "--",
        "RUST_LOG",
    ];
    span.trim().contains(' ') && !NOT_MESSAGES.iter().any(|p| span.starts_with(p))
}

/// Whether a word of a quote is a placeholder: all capitals (`N`, `PATH`, `TARGET`, each part
/// of `FILE:LINE:COLUMN`) or a status code (`0xSSSS`).
fn is_placeholder(word: &str) -> bool {
    word.starts_with("0xS")
        || (word.chars().any(|c| c.is_ascii_uppercase()) && !word.chars().any(char::is_lowercase))
}

/// The literal fragments of a quote: the text between placeholders, `...` and `: ` (where
/// a quote joins a message to the error it wraps, two format strings in the code), with the
/// punctuation at their ends (next to a `{}` in the format string) trimmed.
fn fragments(quote: &str) -> Vec<String> {
    const CUT: char = '\0';
    let q = quote.replace("...", "\0").replace(": ", "\0");
    let mut marked = String::new();
    let mut word = String::new();
    let end_word = |word: &mut String, marked: &mut String| {
        if is_placeholder(word) {
            marked.push(CUT);
        } else {
            marked.push_str(word);
        }
        word.clear();
    };
    for c in q.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            end_word(&mut word, &mut marked);
            marked.push(c);
        }
    }
    end_word(&mut word, &mut marked);
    marked
        .split(CUT)
        .map(|f| f.trim_matches(|c: char| !c.is_alphanumeric()).to_string())
        .filter(|f| f.chars().any(char::is_lowercase))
        .collect()
}

fn rust_sources(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            out.push('\n');
        }
    }
}

#[test]
fn quoted_messages_occur_in_the_source() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let md = std::fs::read_to_string(root.join("docs/troubleshooting.md"))
        .expect("docs/troubleshooting.md");
    let mut src = String::new();
    for krate in ["scsi-proto", "storage-core", "target-daemon"] {
        rust_sources(&root.join(krate).join("src"), &mut src);
    }
    assert!(src.len() > 100_000, "source tree not found under {root:?}");

    let quotes: Vec<String> = code_spans(&md)
        .into_iter()
        .filter(|s| is_message(s))
        .collect();
    let mut missing = Vec::new();
    for q in &quotes {
        for f in fragments(q) {
            if !src.contains(&f) {
                missing.push(format!("`{q}`: {f:?}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md quotes text the code never prints:\n{}",
        missing.join("\n")
    );
    // The checker must actually see the messages (not skip them all as names).
    for must in [
        "login refused",
        "space guarantee unavailable",
        "is open in another process or handle",
        "configuration error",
        "cannot listen on",
        "is in use",
    ] {
        assert!(
            quotes.iter().any(|q| q.contains(must)),
            "no quote containing {must:?} was checked; quotes: {quotes:#?}"
        );
    }
}

#[test]
fn the_checker_catches_drift() {
    // Quotes the code does not print (the texts this file was written to catch).
    let src = "\"space guarantee unavailable: {needed_bytes} bytes needed, {available_bytes} available\"\n\
               \"{what} is open in another process or handle\"";
    for stale in [
        "guarantee unavailable: needs N bytes, M available",
        "pool busy",
    ] {
        assert!(is_message(stale));
        assert!(
            fragments(stale).iter().any(|f| !src.contains(f.as_str())),
            "{stale:?} should not match {src}"
        );
    }
    let good = "space guarantee unavailable: N bytes needed, M available";
    assert_eq!(
        fragments(good),
        ["space guarantee unavailable", "bytes needed", "available"]
    );
    assert!(fragments(good).iter().all(|f| src.contains(f.as_str())));
    assert!(!is_message("lunarctl lun list"));
    assert!(!is_message("chap:"));
    assert_eq!(
        fragments("login refused: login failed (0xSSSS): REASON"),
        ["login refused", "login failed"]
    );
    assert_eq!(
        fragments("LUN \"NAME\" is in use (sessions logged in to TARGET)"),
        ["is in use (sessions logged in to"]
    );
}
