//! Writing a batch of facts in few statements.
//!
//! Each event becomes rows for one or two fact tables ([`Write`]); a
//! batch's rows are sent as multi-row statements, one per table, shape and
//! round, instead of one statement per event: a PostgreSQL round trip costs
//! more than the row itself. Every statement touches one row per key (its
//! upsert's `ON CONFLICT` or its update's `WHERE` reads that row alone), so
//! writes to different keys commute; writes to the same key keep their
//! order by going into successive rounds (a work item enqueued, assigned
//! and completed in one batch is three rounds, each a statement for every
//! work item of the batch).

use std::collections::{BTreeMap, HashMap};

use guichet_platform::db::Sql;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

/// How a statement writes its rows.
#[derive(Debug)]
pub enum Shape {
    /// `INSERT … VALUES (…), (…) <this clause>` (`ON CONFLICT … DO …`).
    Upsert(&'static str),
    /// `UPDATE <table> SET <this clause> FROM (VALUES (…), (…)) AS v WHERE
    /// <table>.<first column> = v.column1`: the clause reads the row's
    /// values as `v.column2`, `v.column3`… (both backends name a VALUES
    /// list's columns so). An update finds nothing to do when the row is
    /// missing.
    Update(&'static str),
}

/// One statement shape: a table, its columns in row order, and how.
#[derive(Debug)]
pub struct Op {
    pub table: &'static str,
    pub columns: &'static [&'static str],
    pub shape: Shape,
}

/// One row to write; `key` identifies the row it touches in its table.
#[derive(Debug)]
pub struct Write {
    pub op: &'static Op,
    pub key: String,
    pub values: Vec<Value>,
}

/// At most this many bound values per SQLite statement (it allows 32,766).
const MAX_PARAMS: usize = 30_000;

/// The statements that write `rows` (all of one op, in one round).
///
/// PostgreSQL gets the rows as JSON arrays, each bound to a statement whose
/// text depends on the op alone, so it is parsed and planned once per
/// connection (a VALUES list of a few hundred rows cost more to plan than
/// to run); SQLite, in process, gets multi-row VALUES lists.
pub fn statements(
    backend: DbBackend,
    op: &Op,
    rows: Vec<Vec<Value>>,
    suffix: &str,
) -> Vec<Statement> {
    if rows.is_empty() {
        return Vec::new();
    }
    if backend == DbBackend::Postgres {
        return json_statements(op, rows, suffix);
    }
    let per = (MAX_PARAMS / op.columns.len().max(1)).max(1);
    let mut out = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut sql = Sql::new(backend);
        sql.push(&head(op));
        sql.push(if matches!(op.shape, Shape::Update(_)) {
            "(VALUES "
        } else {
            "VALUES "
        });
        for (n, row) in rows.by_ref().take(per).enumerate() {
            sql.push(if n == 0 { "(" } else { ", (" });
            for (i, v) in row.into_iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(v);
            }
            sql.push(")");
        }
        sql.push(&tail(op)).push(suffix);
        out.push(sql.build());
    }
    out
}

/// `INSERT INTO t (…) ` or `UPDATE t SET … FROM `.
fn head(op: &Op) -> String {
    match op.shape {
        Shape::Upsert(_) => format!("INSERT INTO {} ({}) ", op.table, op.columns.join(", ")),
        Shape::Update(set) => format!("UPDATE {} SET {set} FROM ", op.table),
    }
}

/// What follows the rows: the conflict clause, or the update's join.
fn tail(op: &Op) -> String {
    match op.shape {
        Shape::Upsert(conflict) => format!(" {conflict}"),
        Shape::Update(_) => format!(") AS v WHERE {}.{} = v.column1", op.table, op.columns[0]),
    }
}

/// A PostgreSQL message that does not fit one write waits for the
/// server's delayed acknowledgement (sqlx leaves Nagle's algorithm on):
/// 40 ms a statement. Each statement's rows stay under this many bytes.
const MAX_JSON_BYTES: usize = 12_000;

/// PostgreSQL: the rows as `jsonb` arrays of arrays, read back as
/// `column1`, `column2`… typed like the values.
fn json_statements(op: &Op, rows: Vec<Vec<Value>>, suffix: &str) -> Vec<Statement> {
    let columns: Vec<String> = rows[0]
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let ty = match v {
                Value::BigInt(_) => "BIGINT",
                Value::Int(_) => "INTEGER",
                _ => "TEXT",
            };
            format!("CAST(e ->> {i} AS {ty}) AS column{}", i + 1)
        })
        .collect();
    let rows_sql = format!(
        "(SELECT {} FROM jsonb_array_elements(CAST($1 AS JSONB)) AS e",
        columns.join(", ")
    );
    let body = match op.shape {
        Shape::Upsert(_) => {
            let picked: Vec<String> = (1..=op.columns.len())
                .map(|i| format!("column{i}"))
                .collect();
            format!("SELECT {} FROM {rows_sql}) AS v", picked.join(", "))
        }
        Shape::Update(_) => rows_sql,
    };
    let sql = format!("{}{body}{}{suffix}", head(op), tail(op));
    let mut out = Vec::new();
    let mut chunk = String::new();
    let mut emit = |chunk: &mut String| {
        if !chunk.is_empty() {
            let json = format!("[{chunk}]");
            out.push(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql.clone(),
                [Value::from(json)],
            ));
            chunk.clear();
        }
    };
    for row in rows {
        let row = serde_json::Value::Array(row.into_iter().map(to_json).collect()).to_string();
        if !chunk.is_empty() && chunk.len() + row.len() + 1 > MAX_JSON_BYTES {
            emit(&mut chunk);
        }
        if !chunk.is_empty() {
            chunk.push(',');
        }
        chunk.push_str(&row);
    }
    emit(&mut chunk);
    out
}

fn to_json(v: Value) -> serde_json::Value {
    match v {
        Value::BigInt(Some(n)) => n.into(),
        Value::Int(Some(n)) => n.into(),
        Value::String(Some(s)) => s.into(),
        _ => serde_json::Value::Null,
    }
}

/// One statement's op and rows.
type Group = (&'static Op, Vec<Vec<Value>>);

/// Write `writes` (in event order) in as few statements as their order
/// allows.
pub async fn flush(conn: &impl ConnectionTrait, writes: Vec<Write>) -> Result<(), DbErr> {
    // Round of each write: how many earlier writes touched its row.
    let mut seen: HashMap<(&'static str, String), usize> = HashMap::new();
    // (round, op) → rows; ops are told apart by address (each is a static).
    let mut groups: BTreeMap<(usize, usize), Group> = BTreeMap::new();
    for w in writes {
        let round = seen.entry((w.op.table, w.key)).or_insert(0);
        let group = groups
            .entry((*round, std::ptr::from_ref(w.op) as usize))
            .or_insert_with(|| (w.op, Vec::new()));
        group.1.push(w.values);
        *round += 1;
    }
    let backend = conn.get_database_backend();
    for (_, (op, rows)) in groups {
        for statement in statements(backend, op, rows, "") {
            conn.execute_raw(statement).await?;
        }
    }
    Ok(())
}
