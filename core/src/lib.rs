pub mod access;
pub mod forecast;
pub mod schedule;
pub mod score;
pub mod sparkline;
