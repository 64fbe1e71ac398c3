//! Building blocks for statements that read the same on both backends.

use sqlx::any::AnyArguments;
use sqlx::{Any, Arguments as _, Database, Decode, Encode, Type};

/// A true/false column or expression: PostgreSQL answers a boolean, SQLite an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub bool);

impl From<Flag> for bool {
    fn from(flag: Flag) -> Self {
        flag.0
    }
}

impl Type<Any> for Flag {
    fn type_info() -> <Any as Database>::TypeInfo {
        <bool as Type<Any>>::type_info()
    }

    fn compatible(ty: &<Any as Database>::TypeInfo) -> bool {
        <bool as Type<Any>>::compatible(ty) || <i64 as Type<Any>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Any> for Flag {
    fn decode(value: <Any as Database>::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        match <bool as Decode<'r, Any>>::decode(value.clone()) {
            Ok(flag) => Ok(Self(flag)),
            Err(_) => Ok(Self(<i64 as Decode<'r, Any>>::decode(value)? != 0)),
        }
    }
}

/// A statement whose parameters (`$1`, `$2`, ..., or SQLite's anonymous `?`) are written
/// as its values are bound, for multi-row inserts whose row count is only known at run time.
pub struct Values {
    sql: String,
    args: AnyArguments,
    count: usize,
    /// Numbered `$N` (both backends read it), or SQLite's anonymous `?`.
    numbered: bool,
}

impl Values {
    pub fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            args: AnyArguments::default(),
            count: 0,
            numbered: true,
        }
    }

    /// For a statement run on `backend` only, whose own text binds no parameter. SQLite
    /// keeps every named or numbered parameter (`$N`, `?N`) in a list that binding searches
    /// from the start for each one, which makes a statement of thousands of parameters (a
    /// webhook batch) quadratic to bind; anonymous `?` parameters are never listed.
    pub(in crate::store) fn on(backend: super::Backend, sql: &str) -> Self {
        let mut values = Self::new(sql);
        values.numbered = backend != super::Backend::Sqlite;
        values
    }

    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends the next parameter's placeholder and binds `value` to it.
    pub fn bind<'q, T: Encode<'q, Any> + Type<Any> + 'q>(&mut self, value: T) -> &mut Self {
        self.count += 1;
        if self.numbered {
            self.sql.push('$');
            self.sql.push_str(&self.count.to_string());
        } else {
            self.sql.push('?');
        }
        // Encoding into the driver-neutral buffer cannot fail for the types bound here.
        if let Err(error) = self.args.add(value) {
            tracing::error!(%error, "a statement parameter did not encode");
        }
        self
    }

    /// Appends `VALUES (..), (..)`: one row per item, each written by `row`.
    pub fn rows<I>(&mut self, items: impl IntoIterator<Item = I>, mut row: impl FnMut(&mut Row<'_>, I)) -> &mut Self {
        self.sql.push_str("VALUES ");
        for (index, item) in items.into_iter().enumerate() {
            if index > 0 {
                self.sql.push_str(", ");
            }
            self.sql.push('(');
            row(
                &mut Row {
                    values: self,
                    first: true,
                },
                item,
            );
            self.sql.push(')');
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn build(self) -> sqlx::query::Query<'static, Any, AnyArguments> {
        sqlx::query_with(sqlx::AssertSqlSafe(self.sql), self.args)
    }

    pub fn build_as<T>(self) -> sqlx::query::QueryAs<'static, Any, T, AnyArguments>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        sqlx::query_as_with(sqlx::AssertSqlSafe(self.sql), self.args)
    }

    pub fn build_scalar<T>(self) -> sqlx::query::QueryScalar<'static, Any, T, AnyArguments>
    where
        (T,): for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        sqlx::query_scalar_with(sqlx::AssertSqlSafe(self.sql), self.args)
    }
}

/// One row of [`Values::rows`].
pub struct Row<'v> {
    values: &'v mut Values,
    first: bool,
}

impl Row<'_> {
    pub fn bind<'q, T: Encode<'q, Any> + Type<Any> + 'q>(&mut self, value: T) -> &mut Self {
        if !self.first {
            self.values.sql.push_str(", ");
        }
        self.first = false;
        self.values.bind(value);
        self
    }
}
