//! The Python reference: `py/reference.py serve`, one JSON request and reply per line.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

use crate::BenchResult;

/// `reference.py`, next to this crate's manifest.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py/reference.py")
}

/// A command running `python`, quiet and offline as every reference runs, with `threads`
/// intra-op threads.
pub fn command(python: &Path, threads: i32) -> Command {
    let mut cmd = hooks_test_support::python_command(python);
    cmd.env("OMP_NUM_THREADS", threads.to_string());
    cmd
}

/// A running `reference.py serve`.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    pub fn start(python: &Path, threads: i32) -> BenchResult<Worker> {
        let mut cmd = command(python, threads);
        cmd.arg(script()).arg("serve");
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Worker { child, stdin, stdout })
    }

    /// Sends `request` and waits for its reply; an `error` reply becomes an error.
    pub fn call(&mut self, request: &Value) -> BenchResult<Value> {
        writeln!(self.stdin, "{request}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(format!("reference.py exited during {}", request["cmd"]).into());
        }
        let reply: Value = serde_json::from_str(&line)?;
        if let Some(error) = reply.get("error") {
            return Err(format!(
                "reference.py failed on {}:\n{}",
                request["cmd"],
                error.as_str().unwrap_or("")
            )
            .into());
        }
        Ok(reply)
    }

    /// The `seconds` of a reply, as one number or a list.
    pub fn seconds(reply: &Value) -> Vec<f64> {
        match &reply["seconds"] {
            Value::Array(xs) => xs.iter().filter_map(Value::as_f64).collect(),
            x => x.as_f64().into_iter().collect(),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}
