//! `rustunnel completions <shell>` and `rustunnel man`: shell completion scripts and man pages
//! generated from the same clap definition the command line parses with, so they cannot drift.
//! The caller passes that definition in, so this file does not depend on the crate root.
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Directory the pages are written into (rustunnel.1 and one per subcommand).
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
}

/// Prints the completion script for `cli` on stdout.
pub fn completions(a: CompletionsArgs, mut cli: clap::Command) -> i32 {
    use std::io::Write as _;
    // Into memory first: the generator panics on a write error (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cli, "rustunnel", &mut script);
    let _ = std::io::stdout().write_all(&script);
    0
}

/// Writes the man pages of `cli`; prints where.
pub fn man(a: ManArgs, cli: clap::Command) -> i32 {
    let written = std::fs::create_dir_all(&a.out_dir).and_then(|()| clap_mangen::generate_to(cli, &a.out_dir));
    match written {
        Ok(()) => {
            println!("man pages written to {}", a.out_dir.display());
            0
        }
        Err(e) => {
            eprintln!("error: cannot write man pages to {}: {e}", a.out_dir.display());
            1
        }
    }
}
