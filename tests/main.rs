
mod argus;
