pub mod access;
pub mod forecast;
pub mod score;
pub mod sparkline;
