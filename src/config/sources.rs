//! Where settings come from besides the environment: the config file, read from exactly
//! the path given.

use std::path::Path;

use figment::providers::{Data, Format, Toml};

/// The config file as a figment provider; `None` when an optional file is absent.
///
/// Read here rather than by figment: its `Toml::file` looks in every parent directory
/// for a relative path, and a parse error would come back from every section's extract.
pub(super) fn toml_file(path: &Path, required: bool) -> Result<Option<Data<Toml>>, String> {
    let shown = path.display();
    match std::fs::read_to_string(path) {
        Ok(text) => match Toml::from_str::<figment::value::Dict>(&text) {
            Ok(_) => Ok(Some(Toml::file_exact(path))),
            Err(e) => Err(format!("{shown}: {}", e.to_string().trim_end())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("config file {shown} does not exist"))
        }
        Err(e) => Err(format!("cannot read config file {shown}: {e}")),
    }
}
