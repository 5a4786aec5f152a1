pub mod access;
pub mod score;
