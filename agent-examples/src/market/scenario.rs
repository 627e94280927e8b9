//! Scenario files: how every demo market reads `--scenario FILE` (JSON), and why one
//! cannot be used.

use std::path::Path;

use serde::de::DeserializeOwned;

/// Why a scenario cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read the scenario {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The JSON does not describe this kind of market.
    #[error("the scenario is not valid: {0}")]
    Parse(#[from] serde_json::Error),
    /// It describes one that cannot run.
    #[error("the scenario is not consistent: {0}")]
    Inconsistent(String),
}

/// A scenario from JSON `text`, checked by `validate` (what JSON cannot say).
pub fn from_json<S: DeserializeOwned>(
    text: &str,
    validate: impl FnOnce(&S) -> Result<(), ScenarioError>,
) -> Result<S, ScenarioError> {
    let scenario: S = serde_json::from_str(text)?;
    validate(&scenario)?;
    Ok(scenario)
}

/// A scenario read from the JSON file at `path`, checked by `validate`.
pub fn load<S: DeserializeOwned>(
    path: &Path,
    validate: impl FnOnce(&S) -> Result<(), ScenarioError>,
) -> Result<S, ScenarioError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ScenarioError::Read { path: path.display().to_string(), source })?;
    from_json(&text, validate)
}
