//! The interactive SQL shell: history, multi-line statements (a statement ends with `;`),
//! backslash commands, and timing.

use std::time::Instant;

use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

use super::output::{Format, Sink};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::session::LakeSession;

const HELP: &str = "\
  \\d            list tables
  \\d NAME       list the columns of a table
  \\version      the lake version and table versions this session reads
  \\timing       toggle timing of statements (on by default)
  \\q            quit
  A statement ends with ';' and may span lines.";

pub async fn run(session: &LakeSession, lake: &Lake) -> Result<()> {
    let mut rl = DefaultEditor::new().map_err(|e| Error::Invalid(format!("line editor: {e}")))?;
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".medlake_history"));
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    println!(
        "medlake {} on {} (lake version {}). \\? for help, \\q to quit.",
        env!("CARGO_PKG_VERSION"),
        lake.root(),
        session
            .lake_version
            .map_or_else(|| "none".to_string(), |v| v.to_string())
    );
    let mut timing = true;
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "medlake> "
        } else {
            "    ...> "
        };
        let line = match rl.readline(prompt) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Error::Invalid(format!("line editor: {e}"))),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = rl.add_history_entry(trimmed);
            let mut parts = trimmed.split_whitespace();
            let cmd = parts.next().unwrap_or("");
            let arg = parts.next();
            let sql = match (cmd, arg) {
                ("\\q", _) => break,
                ("\\?" | "\\h", _) => {
                    println!("{HELP}");
                    continue;
                }
                ("\\timing", _) => {
                    timing = !timing;
                    println!("timing is {}", if timing { "on" } else { "off" });
                    continue;
                }
                ("\\d", None) => "SELECT table_name, table_type FROM information_schema.tables \
                     WHERE table_schema = 'public' ORDER BY table_name"
                    .to_string(),
                ("\\d", Some(t)) => format!(
                    "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
                     WHERE table_name = '{}' ORDER BY ordinal_position",
                    t.replace('\'', "''")
                ),
                ("\\version", _) => "SELECT * FROM lake_version()".to_string(),
                _ => {
                    println!("unknown command {cmd}; \\? for help");
                    continue;
                }
            };
            run_one(session, &sql, false).await;
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if trimmed.ends_with(';') {
            let sql = std::mem::take(&mut buffer);
            let _ = rl.add_history_entry(sql.trim());
            run_one(session, &sql, timing).await;
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    Ok(())
}

async fn run_one(session: &LakeSession, sql: &str, timing: bool) {
    let started = Instant::now();
    let result = async {
        let mut sink = Sink::open(Format::Table, None)?;
        super::statements::run_all(&session.ctx, sql, &mut sink).await?;
        sink.finish()
    }
    .await;
    if let Err(e) = result {
        eprintln!("error: {e}");
    }
    if timing {
        println!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
    }
}
