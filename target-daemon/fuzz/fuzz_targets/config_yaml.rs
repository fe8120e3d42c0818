//! Arbitrary text as lunard's YAML configuration, through `Config::from_yaml_str` (parsing,
//! then validation, then the error's line lookup). Nothing may panic or hang; a config that
//! loads validates and writes back (`to_yaml`) to text that loads as the same configuration;
//! an error names a line that exists in the text. The same text is also
//! parsed as a byte size (`64KiB`), which must print back to text that parses to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use target_daemon::config::{ByteSize, Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // At most as many lines as the YAML parser can count: every YAML line break (CR and LF
    // counted apart, NEL, LS, PS) ends one, and a final line without a break still counts.
    let lines = text
        .split(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
        .count();
    match Config::from_yaml_str(text, "fuzz.yaml") {
        Ok(cfg) => {
            assert_eq!(cfg.validate(), Ok(()));
            // What `config export` would write reads back as the same configuration.
            let text = cfg.to_yaml().expect("a parsed config writes back");
            let back = Config::from_yaml_str(&text, "exported.yaml").expect("export reloads");
            assert_eq!(back, cfg, "{text}");
        }
        Err(e) => {
            let _ = e.to_string();
            match e {
                ConfigError::Syntax { line, column, .. } => {
                    // The YAML parser reports an error at end of input one line past a
                    // last line that lacks its newline.
                    assert!((1..=lines + 1).contains(&line), "line {line} of {lines}");
                    assert!(column >= 1);
                }
                ConfigError::Invalid { line, .. } => assert!(line <= lines, "line {line}"),
                ConfigError::Unlocated { .. } | ConfigError::Read { .. } => {}
            }
        }
    }
    if let Ok(size) = ByteSize::parse(text) {
        assert_eq!(ByteSize::parse(&size.to_string()), Ok(size));
    }
});
