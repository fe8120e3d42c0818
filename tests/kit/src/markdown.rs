//! Reading the docs' code blocks, for the tests that run every documented command.

/// Fenced blocks of a Markdown text as (info string, body), in order. A block opens with a
/// line starting (after indentation) with three backticks, whose rest is the info string
/// (`sh`, `sh setup`, `yaml`...), and closes with a line of exactly three backticks; the body
/// keeps its lines as written, each ending in a newline. An unclosed block is dropped.
pub fn fenced_blocks(md: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in md.lines() {
        let t = line.trim_start();
        match &mut cur {
            None => {
                if let Some(info) = t.strip_prefix("```") {
                    cur = Some((info.trim().to_string(), String::new()));
                }
            }
            Some(_) if t == "```" => {
                if let Some(block) = cur.take() {
                    out.push(block);
                }
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::fenced_blocks;

    #[test]
    fn blocks_with_info_strings_in_order() {
        let md =
            "text\n```sh\nlunarctl pool status\n```\n  ```yaml setup\n  a: 1\n  ```\n```\nopen";
        assert_eq!(
            fenced_blocks(md),
            vec![
                ("sh".to_string(), "lunarctl pool status\n".to_string()),
                ("yaml setup".to_string(), "  a: 1\n".to_string()),
            ]
        );
    }
}
