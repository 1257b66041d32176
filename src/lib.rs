//! medlake: a multimodal data-lake query engine for medicine.
//!
//! Data flows one way: sources → [`ingest`] → [`lake`] tables → [`session`] → SQL
//! [`functions`] → results. See ARCHITECTURE.md for the whole picture.
//!
//! ```no_run
//! # async fn run() -> medlake::Result<()> {
//! let lake = medlake::Lake::open("./lake")?;
//! let session = medlake::open_session(&lake, None).await?;
//! let df = session.ctx.sql("SELECT Modality, count(*) AS n FROM series GROUP BY Modality").await?;
//! df.show().await?;
//! # Ok(()) }
//! ```

pub mod cli;
pub mod compute;
pub mod demo;
pub mod error;
pub mod functions;
pub mod genomics;
pub mod ingest;
pub mod lake;
pub mod models;
pub mod optimize;
pub mod phantoms;
pub mod search;
pub mod server;
pub mod session;
pub mod synth;
pub mod tables;

pub use error::{Error, Result};
pub use lake::{AsOf, Lake};
pub use session::{open_session, LakeSession};
