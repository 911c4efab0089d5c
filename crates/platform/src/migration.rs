//! Small building blocks for the roles' sea-orm migrations, so each role
//! writes its DDL and not the same helpers again.

use sea_orm_migration::prelude::*;

/// A table, column or index name.
pub fn ident(s: &str) -> Alias {
    Alias::new(s)
}

/// A required timestamp with time zone.
pub fn timestamp(name: &str) -> ColumnDef {
    ColumnDef::new(ident(name))
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

/// An optional timestamp with time zone.
pub fn timestamp_null(name: &str) -> ColumnDef {
    ColumnDef::new(ident(name))
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

/// A required string.
pub fn string(name: &str) -> ColumnDef {
    ColumnDef::new(ident(name)).string().not_null().to_owned()
}

/// A string primary key `id` (UUID v7 ids).
pub fn id_pk() -> ColumnDef {
    string("id").primary_key().to_owned()
}

/// Add one column. One per ALTER: SQLite takes a single change per statement.
pub async fn add_column(
    m: &SchemaManager<'_>,
    table: &str,
    column: &mut ColumnDef,
) -> Result<(), DbErr> {
    m.alter_table(
        Table::alter()
            .table(ident(table))
            .add_column(column)
            .to_owned(),
    )
    .await
}

/// Create an index on `columns` of `table`.
pub async fn index(
    m: &SchemaManager<'_>,
    name: &str,
    table: &str,
    columns: &[&str],
    unique: bool,
) -> Result<(), DbErr> {
    let mut idx = Index::create().name(name).table(ident(table)).to_owned();
    for c in columns {
        idx.col(ident(c));
    }
    if unique {
        idx.unique();
    }
    m.create_index(idx).await
}
