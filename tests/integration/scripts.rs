//! The README's scripts as a new user meets them: `scripts/demo.sh` never deletes a folder it
//! did not make, and `--help` only prints help.

use std::process::Command;

use crate::common::*;

fn demo() -> Command {
    let mut c = Command::new("bash");
    c.arg(root().join("scripts/demo.sh"));
    c
}

#[test]
fn demo_help_prints_usage_and_does_nothing_else() {
    for flag in ["--help", "-h"] {
        let o = run(demo().arg(flag));
        assert!(o.status.success(), "{}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.starts_with("Usage: scripts/demo.sh [OUT]"), "{text}");
        assert!(text.contains("never deletes"), "{text}");
        // No setup, no commands traced.
        assert!(!stderr(&o).contains("setup:") && !stderr(&o).contains("+ "));
    }
    let o = run(demo().arg("--bogus"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown option --bogus"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn demo_refuses_a_folder_it_did_not_make_and_deletes_nothing() {
    let tmp = temp_dir("demo_refuses");
    // A user's folder of pictures, guessed as the demo's argument.
    let pictures = tmp.join("Pictures");
    std::fs::create_dir_all(pictures.join("2024")).unwrap();
    std::fs::write(pictures.join("cat.jpg"), b"not really a jpeg").unwrap();
    std::fs::write(pictures.join("2024/dog.png"), b"nor a png").unwrap();
    let o = run(demo().arg(&pictures));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("not empty and was not made by demo.sh") && err.contains("never deletes"),
        "{err}"
    );
    assert!(
        !err.contains("setup:"),
        "refused before setting anything up: {err}"
    );
    assert_eq!(
        std::fs::read(pictures.join("cat.jpg")).unwrap(),
        b"not really a jpeg"
    );
    assert!(pictures.join("2024/dog.png").is_file());
    assert!(!pictures.join(".distorch-vision-demo").exists());

    // A relative argument is relative to where the user is, not to the checkout.
    let o = run(demo().arg("Pictures").current_dir(&tmp));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&pictures.display().to_string()),
        "{}",
        stderr(&o)
    );

    // A file is refused too.
    let file = pictures.join("cat.jpg");
    let o = run(demo().arg(&file));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not a folder"), "{}", stderr(&o));
    assert!(file.is_file());
}
