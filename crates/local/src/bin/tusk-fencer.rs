//! A `tusk local` member's fencer (crates/local/src/fencer.rs), as its own program for the
//! library's users that are not the `tusk` binary: the tests and the chaos runner. `tusk`
//! runs the same loop as `tusk local fence`.
//!
//!     tusk-fencer MEMBER_DIR/fencer.json

fn main() {
    let Some(config) = std::env::args_os().nth(1) else {
        eprintln!("usage: tusk-fencer FENCER_JSON");
        std::process::exit(2);
    };
    if let Err(e) = tusk_local::fencer::run(std::path::Path::new(&config)) {
        eprintln!("tusk-fencer: {e}");
        std::process::exit(1);
    }
}
