//! medlake's own logical optimizer rules, added to every session by
//! [`crate::session::plain_context`].
//!
//! * [`MultiDistinctToGroupBy`]: per-group `count(DISTINCT ...)` that DataFusion's
//!   `single_distinct_aggregation_to_group_by` leaves on its slow path (one hash set per
//!   group), rewritten into two plain aggregations.
//! * [`stats::GroupedAggregateEstimate`]: a row estimate for GROUP BY without
//!   distinct-count statistics, so that joins build their hash table on the grouped side.

mod multi_distinct;
pub mod stats;

pub use multi_distinct::MultiDistinctToGroupBy;
pub use stats::statistics_registry;
