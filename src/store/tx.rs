//! A write transaction, as both backends hold it.

use super::StoreError;
use sqlx::{Database, Transaction};
use std::ops::{Deref, DerefMut};
use tokio::sync::MutexGuard;

/// A write transaction, with the writer turn it waited for when the backend queues writers
/// (SQLite); the turn is released after the commit or rollback. Derefs to the connection.
pub struct WriteTx<'a, DB: Database> {
    tx: Transaction<'static, DB>,
    _turn: Option<MutexGuard<'a, ()>>,
}

impl<'a, DB: Database> WriteTx<'a, DB> {
    pub fn new(tx: Transaction<'static, DB>, turn: Option<MutexGuard<'a, ()>>) -> Self {
        WriteTx { tx, _turn: turn }
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        Ok(self.tx.rollback().await?)
    }
}

impl<DB: Database> Deref for WriteTx<'_, DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: Database> DerefMut for WriteTx<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}
