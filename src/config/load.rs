//! Reading a config file: YAML -> [`Config`], then [`validate`](super::validate)
//! and the check of the files it names, with every error reported as
//! `FILE:LINE:COLUMN: what is wrong`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{Config, Position};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as the user named it.
    pub file: PathBuf,
    /// Where in the file; line 0 when the problem is the file as a whole.
    pub position: Position,
    /// What is wrong, in one line.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        let Position { line, column } = self.position;
        if line == 0 {
            write!(f, "{file}: {}", self.message)
        } else {
            write!(f, "{file}:{line}:{column}: {}", self.message)
        }
    }
}

/// All the problems found in one file (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Checks the files a config names (certificates and token keys: `app::check_files`),
/// run by the loader after validation. The caller gives it: reading
/// certificates is `tls`'s, a module above `config`.
pub type FileCheck = fn(&Config, &Path) -> Vec<ConfigError>;

/// Reads, parses and validates a config file, including, with
/// `check_files`, that the files it names exist and hold usable
/// certificates.
pub fn load(path: &Path, check_files: FileCheck) -> Result<Config, ConfigErrors> {
    load_file(path, check_files).map(|(config, _)| config)
}

/// Like [`load`], and also returns a digest of the exact text loaded, so a
/// watcher can tell later whether the file still holds it.
pub fn load_file(path: &Path, check_files: FileCheck) -> Result<(Config, u64), ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            position: Position::default(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    let digest = digest(text.as_bytes());
    let mut config = parse_yaml(&text, path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    resolve_paths(&mut config, base);
    // Report every problem at once: the rules and the files they name.
    let mut errors = super::validate::validate(&config, path);
    errors.extend(check_files(&config, path));
    if errors.is_empty() {
        Ok((config, digest))
    } else {
        Err(ConfigErrors(errors))
    }
}

/// A digest of a file's bytes, to notice changes (not for security).
pub fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// Parses and validates config text. `file` only names it in errors.
/// Files the config names are not read here (see [`load`]).
pub fn parse_str(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let config = parse_yaml(text, file)?;
    let errors = super::validate::validate(&config, file);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// YAML syntax and types only: the first error stops the parse.
fn parse_yaml(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    serde_saphyr::from_str(text).map_err(|e| {
        let position = e
            .location()
            .map(|l| Position {
                line: u32::try_from(l.line()).unwrap_or(u32::MAX),
                column: u32::try_from(l.column()).unwrap_or(u32::MAX),
            })
            .unwrap_or_default();
        let message = if text.trim().is_empty() {
            "the config file is empty; it needs at least `service:` and `tls:`".to_owned()
        } else {
            plain_message(&e.without_snippet().to_string())
        };
        ConfigErrors(vec![ConfigError {
            file: file.to_owned(),
            position,
            message,
        }])
    })
}

/// What `pilotfish check` found in a set of files.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Problems that stop the sidecar.
    pub errors: Vec<ConfigError>,
    /// Valid, but probably not meant (messages start with `warning:`).
    pub warnings: Vec<ConfigError>,
}

/// Checks each file as `pilotfish check` does; `check` as in [`load`].
pub fn check_files(paths: &[PathBuf], check: FileCheck) -> CheckReport {
    let mut report = CheckReport::default();
    for path in paths {
        match load(path, check) {
            Ok(config) => report
                .warnings
                .extend(super::validate::warnings(&config, path)),
            Err(errors) => report.errors.extend(errors.0),
        }
    }
    report
}

/// Makes relative certificate and key paths relative to the config file's
/// folder, so a config and its files can move together.
fn resolve_paths(config: &mut Config, base: &Path) {
    let resolve = |path: &mut super::Located<std::path::PathBuf>| {
        if path.is_relative() {
            let position = path.position();
            let joined = base.join(path.get());
            *path = super::Located::at(joined, position);
        }
    };
    if let Some(tls) = &mut config.tls {
        for path in [&mut tls.ca, &mut tls.cert, &mut tls.key] {
            resolve(path);
        }
    }
    let Some(gateway) = &mut config.gateway else {
        return;
    };
    if let Some(tls) = &mut gateway.tls {
        resolve(&mut tls.cert);
        resolve(&mut tls.key);
    }
    for source in gateway.jwt.iter_mut().flat_map(|jwt| jwt.keys.iter_mut()) {
        let position = source.position();
        let mut value = source.get().clone();
        if let Some(path) = value.file_mut() {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        *source = super::Located::at(value, position);
    }
}

/// The parser's message without its own " at line L, column C" suffix (we
/// print the position in front) and with type names said in plain words.
fn plain_message(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    let replacements: &[(&str, &str)] = &[
        ("invalid u16", "expected a whole number from 0 to 65535"),
        (
            "invalid u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("invalid u64", "expected a whole number"),
        ("invalid usize", "expected a whole number"),
        ("expected sequence start", "expected a list"),
        ("expected mapping start", "expected a mapping (key: value)"),
    ];
    for (from, to) in replacements {
        if let Some(rest) = message.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_messages_lose_their_position_suffix() {
        assert_eq!(
            plain_message("unknown field `x`, expected y at line 2, column 1"),
            "unknown field `x`, expected y"
        );
        assert_eq!(
            plain_message("invalid u16 at line 2, column 7"),
            "expected a whole number from 0 to 65535"
        );
    }

    #[test]
    fn errors_print_file_line_column() {
        let err = ConfigError {
            file: "a.yaml".into(),
            position: Position { line: 3, column: 7 },
            message: "boom".into(),
        };
        assert_eq!(err.to_string(), "a.yaml:3:7: boom");
    }
}
