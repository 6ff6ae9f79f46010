//! (stub; being written)
use crate::Result;
pub struct Schedule;
impl Schedule {
    pub fn parse(_s: &str) -> Result<Schedule> {
        unimplemented!()
    }
    pub fn level_on(&self, _date: chrono::NaiveDate) -> u8 {
        unimplemented!()
    }
}
pub fn today_local() -> chrono::NaiveDate {
    chrono::Local::now().date_naive()
}
