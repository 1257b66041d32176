//! `in_region(chrom, pos, 'chr7:55019017-55211628')` and
//! `in_region(chrom, pos, "end", 'chr7:...')`: whether a variant lies in (or, with its
//! end, overlaps) a region, with "7" and "chr7" (and "MT" and "chrM") the same chromosome.
//!
//! With a literal region, the planner's simplifier rewrites the call into plain
//! comparisons, `chrom IN ('chr7', '7') AND pos <= 55211628 AND pos >= 55019017`, which
//! DataFusion prunes Delta files and Parquet row groups with, so a region query on
//! `variants` or `genotypes` reads only the data near the region. Any other call is
//! evaluated row by row.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    lit, ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::Region;
use crate::functions::literal_text;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct InRegion {
    signature: Signature,
}

impl Default for InRegion {
    fn default() -> Self {
        Self::new()
    }
}

impl InRegion {
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for InRegion {
    fn name(&self) -> &str {
        "in_region"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let n = arg_types.len();
        if !(3..=4).contains(&n) {
            return plan_err!(
                "in_region(chrom, pos, region) or in_region(chrom, pos, end, region): \
                 3 or 4 arguments, not {n}"
            );
        }
        let mut out = vec![DataType::Utf8];
        out.extend(std::iter::repeat_n(DataType::Int64, n - 2));
        out.push(DataType::Utf8);
        Ok(out)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let Some(text) = args.last().and_then(literal_text) else {
            return Ok(ExprSimplifyResult::Original(args));
        };
        let region = Region::parse(&text)
            .map_err(|e| datafusion::error::DataFusionError::Plan(format!("in_region: {e}")))?;
        let chrom = args[0].clone();
        let pos = args[1].clone();
        let reach = if args.len() == 4 {
            args[2].clone()
        } else {
            pos.clone()
        };
        let names: Vec<Expr> = super::chrom_spellings(&region.chrom)
            .into_iter()
            .map(lit)
            .collect();
        let mut e = chrom.in_list(names, false);
        if region.end != i64::MAX {
            e = e.and(pos.clone().lt_eq(lit(region.end)));
        }
        if args.len() == 4 {
            // A record starting before the region reaches into it when its end does; the
            // bound on `pos` lets the pruner skip far-away data even so.
            e = e.and(reach.gt_eq(lit(region.start)));
        } else {
            e = e.and(pos.gt_eq(lit(region.start)));
        }
        Ok(ExprSimplifyResult::Simplified(e))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays: Vec<Arc<dyn Array>> = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<_>>()?;
        let text = |i: usize| -> Result<datafusion::arrow::array::StringArray> {
            let c = datafusion::arrow::compute::cast(&arrays[i], &DataType::Utf8)?;
            Ok(datafusion::common::cast::as_string_array(&c)?.clone())
        };
        let int = |i: usize| -> Result<Int64Array> {
            let c = datafusion::arrow::compute::cast(&arrays[i], &DataType::Int64)?;
            Ok(datafusion::common::cast::as_int64_array(&c)?.clone())
        };
        let chrom = text(0)?;
        let pos = int(1)?;
        let end = if arrays.len() == 4 {
            int(2)?
        } else {
            pos.clone()
        };
        let regions = text(arrays.len() - 1)?;
        let mut parsed: Option<(String, Region)> = None;
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            if chrom.is_null(i) || pos.is_null(i) || end.is_null(i) || regions.is_null(i) {
                out.push(None);
                continue;
            }
            let r = regions.value(i);
            if parsed.as_ref().is_none_or(|(t, _)| t != r) {
                let region = Region::parse(r).map_err(|e| {
                    datafusion::error::DataFusionError::Execution(format!("in_region: {e}"))
                })?;
                parsed = Some((r.to_string(), region));
            }
            let region = &parsed.as_ref().expect("parsed above").1;
            out.push(Some(region.overlaps(
                chrom.value(i),
                pos.value(i),
                end.value(i),
            )));
        }
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(out))))
    }
}
