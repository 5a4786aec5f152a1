pub mod access;
pub mod forecast;
pub mod report;
pub mod schedule;
pub mod score;
pub mod series;
pub mod sparkline;
