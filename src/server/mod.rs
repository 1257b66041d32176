//! `medlake serve`: the lake over the PostgreSQL wire protocol, for psql, DBeaver, pandas
//! through psycopg and BI tools.
//!
//! The protocol, the catalog queries clients send (`\d`, DBeaver's metadata) and the
//! type encoding are datafusion-postgres'; what is medlake's is around it:
//! - authentication: SCRAM-SHA-256 against verifiers in a users file ([`scram`]);
//! - each connection runs in its role's session ([`access`]), with its own DataFusion
//!   memory pool (`query_memory`): a query that needs more fails, the server goes on;
//! - a role other than admin may only read: `CREATE EXTERNAL TABLE`, `COPY`, writes and
//!   runtime settings are refused before planning, so no SQL reaches the disk outside
//!   the lake;
//! - every statement is written to `audit_log` before it runs and before it is
//!   reported complete ([`audit`]).

pub mod access;
pub mod audit;
pub mod config;
pub mod scram;

use std::collections::HashMap;
use std::fmt::Debug;
use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{visit_relations, Statement};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::{DfSessionService, Parser};
use futures::{Sink, StreamExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use tokio::net::TcpListener;

use self::access::RoleSession;
use self::audit::{AuditLog, AuditRow};
use self::config::{Config, Role};
use self::scram::{Login, ScramStartup, Users};
use crate::error::{Error, Result};
use crate::lake::Lake;

type DfStatement = (String, Option<(Statement, LogicalPlan)>);

struct CachedRole {
    session: Arc<RoleSession>,
}

/// What every connection shares.
struct Shared {
    lake: Lake,
    config: Config,
    users: Arc<Users>,
    audit: AuditLog,
    roles: tokio::sync::Mutex<HashMap<String, CachedRole>>,
    mock_key: [u8; 32],
}

impl Shared {
    /// The role's session over the lake's newest version: checked at every new
    /// connection, rebuilt when an ingest has recorded a new lake version, so a client
    /// connecting after an ingest finished sees it.
    async fn role_session(&self, role_name: &str) -> Result<Arc<RoleSession>> {
        let role = self
            .config
            .role(role_name)
            .ok_or_else(|| Error::Invalid(format!("role {role_name:?} is not in the config")))?;
        let mut cache = self.roles.lock().await;
        if let Some(c) = cache.get(role_name) {
            let newest = self
                .lake
                .lake_versions()
                .await?
                .last()
                .map(|v| v.lake_version);
            if newest == c.session.lake_version {
                return Ok(c.session.clone());
            }
        }
        let session = Arc::new(build_role_session(&self.lake, role_name, &role).await?);
        cache.insert(
            role_name.to_string(),
            CachedRole {
                session: session.clone(),
            },
        );
        Ok(session)
    }
}

async fn build_role_session(lake: &Lake, role_name: &str, role: &Role) -> Result<RoleSession> {
    let rs = access::role_session(lake, role_name, role).await?;
    // `audit_log` always reads its newest commit (it changes with every statement).
    if rs.tables.iter().any(|t| t == access::AUDIT_LOG) || role.is_admin(role_name) {
        let _ = rs.ctx.deregister_table(access::AUDIT_LOG);
        // The schema as the Delta provider reports it (string columns as views).
        let schema = match lake.table(access::AUDIT_LOG).await? {
            Some(t) => t.table_provider().await?.schema(),
            None => audit::audit_log_schema(),
        };
        rs.ctx.register_table(
            access::AUDIT_LOG,
            Arc::new(crate::session::LatestTable::new(
                lake.clone(),
                access::AUDIT_LOG,
                schema,
            )),
        )?;
    }
    setup_pg_catalog(&rs.ctx, crate::session::CATALOG, EmptyContextProvider)
        .map_err(|e| Error::Invalid(format!("pg_catalog: {e}")))?;
    for (table, why) in &rs.hidden {
        eprintln!("medlake serve: role {role_name}: table {table} is hidden: {why}");
    }
    Ok(rs)
}

/// One connection after login: its user, role and session.
struct Conn {
    user: String,
    role: String,
    admin: bool,
    client: String,
    service: Arc<DfSessionService>,
}

/// Per-connection state, filled when the first statement arrives after login.
struct ConnCell {
    shared: Arc<Shared>,
    login: Arc<Mutex<Option<Login>>>,
    conn: tokio::sync::OnceCell<Arc<Conn>>,
}

fn pg_error(severity: &str, code: &str, message: String) -> ErrorInfo {
    ErrorInfo::new(severity.into(), code.into(), message)
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(pg_error("ERROR", code, message)))
}

impl ConnCell {
    async fn conn<C: ClientInfo>(&self, client: &C) -> PgWireResult<Arc<Conn>> {
        self.conn
            .get_or_try_init(|| async {
                let login = self
                    .login
                    .lock()
                    .expect("not poisoned")
                    .clone()
                    .ok_or_else(|| user_error("28000", "not authenticated".into()))?;
                let session = self
                    .shared
                    .role_session(&login.role)
                    .await
                    .map_err(|e| user_error("XX000", format!("cannot open the lake: {e}")))?;
                let ctx = connection_context(&session, &self.shared.config)
                    .map_err(|e| user_error("XX000", e.to_string()))?;
                let role = self.shared.config.role(&login.role).unwrap_or_default();
                Ok::<_, PgWireError>(Arc::new(Conn {
                    admin: role.is_admin(&login.role),
                    user: login.user,
                    role: login.role,
                    client: client.socket_addr().to_string(),
                    service: Arc::new(DfSessionService::new(Arc::new(ctx))),
                }))
            })
            .await
            .cloned()
    }
}

/// A connection's own context over its role's tables: its own settings and memory pool.
fn connection_context(session: &RoleSession, config: &Config) -> Result<SessionContext> {
    let template = session.ctx.state();
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(TrackConsumersPool::new(
            GreedyMemoryPool::new(config.query_memory()),
            NonZeroUsize::new(3).expect("3 > 0"),
        )))
        // The lake's object stores (registered by the Delta tables) stay reachable...
        .with_object_store_registry(template.runtime_env().object_store_registry.clone())
        // ...but nothing spills to local disk: a query over its memory fails instead.
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()?;
    let state = SessionStateBuilder::new_from_existing(template)
        .with_runtime_env(runtime)
        .build();
    Ok(SessionContext::new_with_state(state))
}

/// Why a role other than admin may not run a statement, or `None` when it may.
fn refusal(stmt: &Statement) -> Option<String> {
    let denied = || {
        Some(format!(
            "permission denied: this role may run queries only (SELECT, EXPLAIN, SHOW, SET, \
             transactions); `{}` needs the admin role",
            first_words(&stmt.to_string())
        ))
    };
    match stmt {
        Statement::Query(_)
        | Statement::ExplainTable { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::Execute { .. }
        | Statement::Close { .. }
        | Statement::Fetch { .. } => None,
        Statement::Explain { statement, .. } | Statement::Prepare { statement, .. } => {
            refusal(statement)
        }
        Statement::Declare { stmts } => {
            if stmts.iter().all(|d| d.for_query.is_some()) {
                None
            } else {
                denied()
            }
        }
        Statement::Set(_) => {
            // Settings of the session are the role's own; those of the runtime (memory,
            // spilling, object stores) are the server's.
            let text = stmt.to_string().to_ascii_lowercase();
            [
                "datafusion.runtime",
                "datafusion.catalog",
                "datafusion.execution.object_store",
            ]
            .iter()
            .any(|p| text.contains(p))
            .then(|| {
                format!(
                    "permission denied: `{}`: runtime settings belong to the server",
                    first_words(&stmt.to_string())
                )
            })
        }
        _ => denied(),
    }
}

fn plan_refusal(plan: &LogicalPlan) -> Option<String> {
    matches!(
        plan,
        LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_)
    )
    .then(|| "permission denied: DDL, COPY and writes need the admin role".to_string())
}

fn first_words(sql: &str) -> String {
    let words: Vec<&str> = sql.split_whitespace().take(4).collect();
    words.join(" ")
}

/// The tables (and table functions) a statement names.
fn relations(stmt: &Statement) -> Vec<String> {
    let mut out = Vec::new();
    let _ = visit_relations(stmt, |name| {
        out.push(name.to_string());
        ControlFlow::<()>::Continue(())
    });
    out.sort();
    out.dedup();
    out
}

/// A statement on its way through the audit log.
struct Audited {
    audit: AuditLog,
    row: AuditRow,
    started: Instant,
    done: bool,
}

impl Audited {
    async fn begin(
        conn: &Conn,
        audit: &AuditLog,
        sql: &str,
        tables: Vec<String>,
    ) -> PgWireResult<Audited> {
        let row = AuditRow {
            query_id: audit::query_id(),
            event: "start",
            at: chrono::Utc::now(),
            user: conn.user.clone(),
            role: conn.role.clone(),
            client: conn.client.clone(),
            sql: sql.to_string(),
            tables,
            status: "started",
            rows_returned: None,
            error: None,
            duration_ms: None,
        };
        audit.record(row.clone()).await.map_err(audit_failed)?;
        Ok(Audited {
            audit: audit.clone(),
            row,
            started: Instant::now(),
            done: false,
        })
    }

    fn end_row(&self, status: &'static str, rows: Option<i64>, error: Option<String>) -> AuditRow {
        AuditRow {
            event: "end",
            at: chrono::Utc::now(),
            status,
            rows_returned: rows,
            error,
            duration_ms: Some(self.started.elapsed().as_secs_f64() * 1e3),
            ..self.row.clone()
        }
    }

    async fn finish(
        mut self,
        status: &'static str,
        rows: Option<i64>,
        error: Option<String>,
    ) -> PgWireResult<()> {
        self.done = true;
        let row = self.end_row(status, rows, error);
        self.audit.record(row).await.map_err(audit_failed)
    }

    /// The response, with its end row written before the client hears it completed.
    async fn respond(self, response: Response) -> PgWireResult<Response> {
        match response {
            Response::Query(q) => Ok(Response::Query(self.counted(q))),
            Response::Error(e) => {
                let msg = e.message.clone();
                self.finish("error", None, Some(msg)).await?;
                Ok(Response::Error(e))
            }
            other => {
                self.finish("ok", None, None).await?;
                Ok(other)
            }
        }
    }

    fn counted(self, q: QueryResponse) -> QueryResponse {
        let tag = q.command_tag().to_string();
        let schema: Arc<Vec<FieldInfo>> = q.row_schema();
        let rows = q.data_rows;
        let stream = futures::stream::unfold(
            (rows, Some(self), 0i64),
            |(mut rows, mut audited, n)| async move {
                audited.as_ref()?;
                match rows.next().await {
                    Some(Ok(r)) => Some((Ok(r), (rows, audited, n + 1))),
                    Some(Err(e)) => {
                        let a = audited.take().expect("checked");
                        let _ = a.finish("error", Some(n), Some(e.to_string())).await;
                        Some((Err(e), (rows, None, n)))
                    }
                    None => {
                        let a = audited.take().expect("checked");
                        match a.finish("ok", Some(n), None).await {
                            Ok(()) => None,
                            Err(e) => Some((Err(e), (rows, None, n))),
                        }
                    }
                }
            },
        );
        let mut out = QueryResponse::new(schema, stream);
        out.set_command_tag(&tag);
        out
    }
}

impl Drop for Audited {
    /// A statement whose results were abandoned (the client went away mid-stream) still
    /// gets its end row.
    fn drop(&mut self) {
        if !self.done {
            let row = self.end_row("aborted", None, Some("the client stopped reading".into()));
            let audit = self.audit.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = audit.record(row).await;
                });
            }
        }
    }
}

fn audit_failed(e: String) -> PgWireError {
    user_error(
        "58030",
        format!("the audit log cannot be written ({e}); the statement was not run"),
    )
}

/// The query handlers of one connection.
struct ConnQuery {
    cell: Arc<ConnCell>,
    parser: Arc<GuardParser>,
}

#[async_trait]
impl SimpleQueryHandler for ConnQuery {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = self.cell.conn(client).await?;
        let audit = &self.cell.shared.audit;
        let statements = match PostgresCompatibilityParser::new().parse(query) {
            Ok(s) => s,
            Err(e) => {
                let a = Audited::begin(&conn, audit, query, Vec::new()).await?;
                a.finish("error", None, Some(e.to_string())).await?;
                return Err(user_error("42601", e.to_string()));
            }
        };
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut out = Vec::new();
        for stmt in statements {
            let sql = stmt.to_string();
            let a = Audited::begin(&conn, audit, &sql, relations(&stmt)).await?;
            if !conn.admin {
                if let Some(why) = refusal(&stmt) {
                    a.finish("refused", None, Some(why.clone())).await?;
                    out.push(Response::Error(Box::new(pg_error("ERROR", "42501", why))));
                    break;
                }
            }
            match SimpleQueryHandler::do_query(&*conn.service, client, &sql).await {
                Ok(mut responses) => {
                    let r = responses.pop().unwrap_or(Response::EmptyQuery);
                    let failed = matches!(r, Response::Error(_));
                    out.push(a.respond(r).await?);
                    if failed {
                        break;
                    }
                }
                Err(e) => {
                    let info: ErrorInfo = e.into();
                    a.finish("error", None, Some(info.message.clone())).await?;
                    out.push(Response::Error(Box::new(info)));
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ExtendedQueryHandler for ConnQuery {
    type Statement = DfStatement;
    type QueryParser = GuardParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = self.cell.conn(client).await?;
        let (sql, parsed) = &portal.statement.statement;
        let tables = parsed
            .as_ref()
            .map(|(s, _)| relations(s))
            .unwrap_or_default();
        let a = Audited::begin(&conn, &self.cell.shared.audit, sql, tables).await?;
        if !conn.admin {
            if let Some((stmt, plan)) = parsed {
                if let Some(why) = refusal(stmt).or_else(|| plan_refusal(plan)) {
                    a.finish("refused", None, Some(why.clone())).await?;
                    return Err(user_error("42501", why));
                }
            }
        }
        match ExtendedQueryHandler::do_query(&*conn.service, client, portal, max_rows).await {
            Ok(r) => a.respond(r).await,
            Err(e) => {
                let info: ErrorInfo = e.into();
                a.finish("error", None, Some(info.message.clone())).await?;
                Err(PgWireError::UserError(Box::new(info)))
            }
        }
    }
}

/// Parses with datafusion-postgres' parser in the connection's session, refusing at
/// Parse what the role may not run.
struct GuardParser {
    cell: Arc<ConnCell>,
    /// The connection's parser, once known (describe messages have no client).
    inner: tokio::sync::OnceCell<Arc<Parser>>,
}

#[async_trait]
impl QueryParser for GuardParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let conn = self.cell.conn(client).await?;
        let inner = self
            .inner
            .get_or_init(|| async { conn.service.query_parser() })
            .await;
        let parsed = inner.parse_sql(client, sql, types).await?;
        if !conn.admin {
            if let Some((_, Some((stmt, plan)))) = &parsed {
                if let Some(why) = refusal(stmt).or_else(|| plan_refusal(plan)) {
                    return Err(user_error("42501", why));
                }
            }
        }
        Ok(parsed)
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        match self.inner.get() {
            Some(p) => p.get_parameter_types(stmt),
            None => Ok(Vec::new()),
        }
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match self.inner.get() {
            Some(p) => p.get_result_schema(stmt, column_format),
            None => Ok(Vec::new()),
        }
    }
}

/// The handlers of one connection.
struct ConnHandlers {
    startup: Arc<ScramStartup>,
    query: Arc<ConnQuery>,
}

impl ConnHandlers {
    fn new(shared: Arc<Shared>) -> ConnHandlers {
        let login = Arc::new(Mutex::new(None));
        let cell = Arc::new(ConnCell {
            shared: shared.clone(),
            login: login.clone(),
            conn: tokio::sync::OnceCell::new(),
        });
        ConnHandlers {
            startup: Arc::new(ScramStartup::new(
                shared.users.clone(),
                shared.config.server.trust_loopback,
                shared.mock_key,
                login,
            )),
            query: Arc::new(ConnQuery {
                parser: Arc::new(GuardParser {
                    cell: cell.clone(),
                    inner: tokio::sync::OnceCell::new(),
                }),
                cell,
            }),
        }
    }
}

impl PgWireServerHandlers for ConnHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.query.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.query.clone()
    }
    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }
}

fn tls_acceptor(config: &Config) -> Result<Option<pgwire::tokio::TlsAcceptor>> {
    use tokio_rustls::rustls;
    let (Some(cert), Some(key)) = (&config.server.tls_cert, &config.server.tls_key) else {
        return Ok(None);
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| Error::io(p.display(), e));
    let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::io(cert.display(), e))?;
    if certs.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no PEM certificate",
            cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| Error::io(key.display(), e))?
        .ok_or_else(|| Error::Invalid(format!("{}: no PEM private key", key.display())))?;
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Invalid(format!("TLS: {e}")))?;
    Ok(Some(pgwire::tokio::TlsAcceptor::from(Arc::new(tls))))
}

/// Serve the lake until the process is stopped.
pub async fn serve(lake: Lake, config: Config) -> Result<()> {
    let users_path = config
        .server
        .users
        .clone()
        .unwrap_or_else(|| "users.toml".into());
    let users = Users::load(&users_path)?;
    if users.is_empty() && !config.server.trust_loopback {
        return Err(Error::Invalid(format!(
            "{}: no users; add one with `medlake user add --users {} NAME --role ROLE`",
            users_path.display(),
            users_path.display()
        )));
    }
    for (user, role) in users.roles() {
        if config.role(role).is_none() {
            return Err(Error::Invalid(format!(
                "{}: user {user:?} has role {role:?}, which the config does not define",
                users_path.display()
            )));
        }
    }
    let addr = config.listen_addr()?;
    if config.server.trust_loopback && !addr.ip().is_loopback() {
        eprintln!(
            "medlake serve: trust_loopback lets local clients in without a password; \
             remote clients still need one"
        );
    }
    let tls = tls_acceptor(&config)?;
    // The audit log exists before the first statement, so every session sees its schema.
    if lake.table(access::AUDIT_LOG).await?.is_none() {
        lake.append(
            access::AUDIT_LOG,
            audit::audit_log_schema(),
            Vec::new(),
            "create",
        )
        .await?;
    }
    let shared = Arc::new(Shared {
        audit: AuditLog::start(lake.clone()),
        lake,
        users: Arc::new(users),
        roles: tokio::sync::Mutex::new(HashMap::new()),
        mock_key: rand::random(),
        config,
    });
    // Build every role's session now: a policy that does not fit its table is a config
    // error to report at start, not at a user's first query.
    let mut roles: Vec<String> = shared.users.roles().map(|(_, r)| r.to_string()).collect();
    roles.sort();
    roles.dedup();
    for role in &roles {
        shared.role_session(role).await?;
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("listen {addr}"), e))?;
    let max = shared.config.server.max_connections.max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    println!(
        "medlake serve: listening on {} ({}), lake {}",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        if tls.is_some() { "TLS" } else { "no TLS" },
        shared.lake.root()
    );
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("medlake serve: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            eprintln!("medlake serve: {peer}: refused, {max} connections already open");
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let handlers = Arc::new(ConnHandlers::new(shared.clone()));
        let tls = tls.clone();
        tokio::spawn(async move {
            // Bad protocol input ends this connection only.
            if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                eprintln!("medlake serve: {peer}: {e}");
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Statement {
        PostgresCompatibilityParser::new()
            .parse(sql)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn only_reads_pass_for_roles() {
        for ok in [
            "SELECT 1",
            "EXPLAIN SELECT * FROM instances",
            "SHOW ALL",
            "SET medlake.device = 'cpu'",
            "BEGIN",
            "COMMIT",
        ] {
            assert_eq!(refusal(&parse(ok)), None, "{ok}");
        }
        for no in [
            "COPY instances TO '/tmp/x.csv'",
            "CREATE TABLE t AS SELECT 1",
            "CREATE VIEW v AS SELECT 1",
            "INSERT INTO t VALUES (1)",
            "DROP TABLE instances",
            "SET datafusion.runtime.memory_limit = '100G'",
            "EXPLAIN ANALYZE COPY instances TO '/tmp/x.csv'",
        ] {
            assert!(refusal(&parse(no)).is_some(), "{no}");
        }
    }

    #[test]
    fn relations_are_named() {
        let s = parse("SELECT * FROM instances i JOIN series s USING (\"SeriesInstanceUID\") WHERE 1 IN (SELECT 1 FROM reports)");
        assert_eq!(relations(&s), vec!["instances", "reports", "series"]);
    }
}
