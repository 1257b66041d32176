//! Row policies inside functions that read a series by its UID.
//!
//! `ct_findings`, `embed` and `predict` read a series' pixel data through the lake, not
//! through the session's tables, and `similar_series` searches every stored vector. Under
//! the server's row policies a session carries a [`SeriesVisibility`]: these functions
//! then treat a series the session cannot see in `series` as one that does not exist
//! (NULL, or no neighbour), so no row reaches a role through a function that it could not
//! read from the table.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::logical_expr::async_udf::AsyncScalarUDFImpl;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
};

/// Which series a session may see.
#[async_trait::async_trait]
pub trait SeriesVisibility: Send + Sync + Debug {
    /// The UIDs among `uids` that the session may see.
    async fn visible(&self, uids: &[String]) -> Result<HashSet<String>>;
}

/// An async UDF whose first argument is a SeriesInstanceUID, answering NULL for series
/// the session may not see (as for a series that does not exist).
#[derive(Debug)]
pub struct SeriesGuarded {
    inner: Arc<dyn AsyncScalarUDFImpl>,
    visibility: Arc<dyn SeriesVisibility>,
}

impl SeriesGuarded {
    pub fn new(inner: Arc<dyn AsyncScalarUDFImpl>, visibility: Arc<dyn SeriesVisibility>) -> Self {
        SeriesGuarded { inner, visibility }
    }
}

impl PartialEq for SeriesGuarded {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) && Arc::ptr_eq(&self.visibility, &other.visibility)
    }
}
impl Eq for SeriesGuarded {}
impl Hash for SeriesGuarded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.name().hash(state);
    }
}

impl ScalarUDFImpl for SeriesGuarded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        datafusion::common::internal_err!("{} is async", self.name())
    }
}

#[async_trait::async_trait]
impl AsyncScalarUDFImpl for SeriesGuarded {
    fn ideal_batch_size(&self) -> Option<usize> {
        self.inner.ideal_batch_size()
    }

    async fn invoke_async_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let uids = cast(&args.args[0].to_array(rows)?, &DataType::Utf8)?;
        let uids = uids
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("cast to Utf8")
            .clone();
        let mut asked: Vec<String> = uids.iter().flatten().map(str::to_string).collect();
        asked.sort();
        asked.dedup();
        let visible = self.visibility.visible(&asked).await?;
        let masked: StringArray = uids
            .iter()
            .map(|u| u.filter(|u| visible.contains(*u)))
            .collect();
        let masked = cast(&masked, args.arg_fields[0].data_type())?;
        args.args[0] = ColumnarValue::Array(masked);
        self.inner.invoke_async_with_args(args).await
    }
}
