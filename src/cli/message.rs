//! Errors as the command line prints them: library errors with settings named by
//! their flags.

use ldam_onnx::error::SettingNames;

/// An error as one line: its causes, outermost first, with the library's
/// settings named by the flags that set them.
pub fn message(error: &anyhow::Error) -> String {
    let causes: Vec<String> = error
        .chain()
        .map(|cause| match cause.downcast_ref::<ldam_onnx::Error>() {
            Some(error) => library_message(error),
            None => cause.to_string(),
        })
        .collect();
    causes.join(": ").replace('\n', " ")
}

/// A library error as the CLI states it: settings named by their flags, and
/// what to run when a step of the workflow was skipped.
pub fn library_message(error: &ldam_onnx::Error) -> String {
    match error {
        ldam_onnx::Error::NotPatched { model } => {
            let model = model.display();
            format!(
                "{model} is not a patched model; run `ldam-onnx patch {model} --class-counts ...` \
                 first (or `--labels-file` with the training labels)"
            )
        }
        other => other.naming_settings(SettingNames::Flags),
    }
}
