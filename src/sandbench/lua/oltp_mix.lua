-- sandbench: OLTP query mix for benchmark 7 (MySQL) of the paper, for sysbench 1.0.x.
--
-- The paper's mix is 70 % SELECT, 20 % INSERT, 10 % UPDATE and DELETE. One sysbench event
-- (one "transaction" in sysbench's report) issues exactly the statements below; the mix is
-- stated here and nowhere else.
local MIX = {
   point_selects = 7,   -- SELECT c FROM sbtest1 WHERE id=?                     (70 %)
   inserts = 2,         -- INSERT INTO sbtest1 ... (ids private to the thread)  (20 %)
   updates_deletes = 1, -- alternately UPDATE ... SET k=k+1 and DELETE ...      (10 %)
}
--
-- Usage (MariaDB/MySQL driver):
--   sysbench oltp_mix.lua --mysql-host=... --mysql-db=sbtest --table-size=N prepare
--   sysbench oltp_mix.lua ... --table-size=N --threads=T --time=S [--mix-report=on] run
--   sysbench oltp_mix.lua ... cleanup
--
-- Statement counts: sysbench's own "SQL statistics" show read = 7/10 and write = 3/10 of the
-- read+write queries (BEGIN/COMMIT are "other"). For the per-type split, --mix-report=on makes
-- every worker thread print one line when it finishes:
--   oltp_mix: thread=0 select=700 insert=200 update=50 delete=50
-- (sandbench.parsers.sysbench.parse_oltp_mix_report sums them). Only statements that
-- succeeded are counted.
--
-- Table size stays stable: each thread inserts rows with ids from its own sequence above
-- --table-size (so threads never collide), and each DELETE removes the rows that thread
-- inserted since its previous DELETE. With the mix above a DELETE comes every second event and
-- removes 4 rows, so at most MIX.inserts rows per thread are left at the end of a run. The next
-- run restarts the sequences, so an INSERT may meet such a leftover row: ON DUPLICATE KEY UPDATE
-- overwrites it instead of failing, and the row is deleted later as usual. (Leftovers that the
-- next run's sequences do not reach, e.g. after a change of --threads, stay: a few rows.)
-- UPDATEs and SELECTs only touch the original rows 1..--table-size, which are never deleted,
-- so every statement affects exactly the rows it names.

sysbench.cmdline.options = {
   table_size = {"Number of rows in sbtest1", 10000},
   skip_trx = {"Run every statement in autocommit mode instead of BEGIN ... COMMIT", false},
   mix_report = {"Print per-thread counts of SELECT/INSERT/UPDATE/DELETE when done", false},
   mysql_storage_engine = {"Storage engine for sbtest1", "innodb"},
}

if MIX.updates_deletes > 0 and MIX.inserts == 0 then
   -- DELETEs remove rows the script inserted; without inserts they would have nothing to
   -- delete and would have to eat into the original rows.
   error("oltp_mix.lua: MIX.inserts must be > 0 when MIX.updates_deletes > 0")
end

local C_TEMPLATE = "###########-###########-###########-###########-###########-" ..
   "###########-###########-###########-###########-###########"
local PAD_TEMPLATE = "###########-###########-###########-###########-###########"

local function connect()
   local drv = sysbench.sql.driver()
   if drv:name() ~= "mysql" then
      error("oltp_mix.lua supports the mysql driver (MySQL/MariaDB) only, not " .. drv:name())
   end
   return drv:connect()
end

-- prepare: the standard sysbench schema (as oltp_common.lua creates it) and --table-size rows.
function prepare()
   local con = connect()
   local n = sysbench.opt.table_size
   print("Creating table 'sbtest1'...")
   con:query(string.format([[
CREATE TABLE sbtest1(
  id INTEGER NOT NULL AUTO_INCREMENT,
  k INTEGER DEFAULT '0' NOT NULL,
  c CHAR(120) DEFAULT '' NOT NULL,
  pad CHAR(60) DEFAULT '' NOT NULL,
  PRIMARY KEY (id)
) ENGINE = %s]], sysbench.opt.mysql_storage_engine))
   print(string.format("Inserting %d records into 'sbtest1'", n))
   -- Explicit ids 1..n: the run relies on exactly these ids existing.
   con:bulk_insert_init("INSERT INTO sbtest1(id, k, c, pad) VALUES")
   for i = 1, n do
      con:bulk_insert_next(string.format("(%d, %d, '%s', '%s')", i,
         sysbench.rand.default(1, n), sysbench.rand.string(C_TEMPLATE),
         sysbench.rand.string(PAD_TEMPLATE)))
   end
   con:bulk_insert_done()
   print("Creating a secondary index on 'sbtest1'...")
   con:query("CREATE INDEX k_1 ON sbtest1(k)")
   con:disconnect()
end

function cleanup()
   local con = connect()
   print("Dropping table 'sbtest1'...")
   con:query("DROP TABLE IF EXISTS sbtest1")
   con:disconnect()
end

-- Per-thread state of the run (every worker thread has its own Lua state).
local con, stmt, param
local counts = {select = 0, insert = 0, update = 0, delete = 0}
local next_seq = 0       -- how many ids this thread has taken from its sequence
local modifications = 0  -- alternates UPDATE (odd) and DELETE (even)
local live = {}          -- ids this thread inserted (committed) and has not deleted yet
local event_inserted, event_deleted = {}, {}
local modifications_at_start = 0

function thread_init()
   con = connect()
   stmt, param = {}, {}
   local t = sysbench.sql.type
   stmt.select = con:prepare("SELECT c FROM sbtest1 WHERE id=?")
   param.select = {stmt.select:bind_create(t.INT)}
   stmt.insert = con:prepare("INSERT INTO sbtest1 (id, k, c, pad) VALUES (?, ?, ?, ?) " ..
      "ON DUPLICATE KEY UPDATE k=VALUES(k), c=VALUES(c), pad=VALUES(pad)")
   param.insert = {stmt.insert:bind_create(t.INT), stmt.insert:bind_create(t.INT),
      stmt.insert:bind_create(t.CHAR, 120), stmt.insert:bind_create(t.CHAR, 60)}
   stmt.update = con:prepare("UPDATE sbtest1 SET k=k+1 WHERE id=?")
   param.update = {stmt.update:bind_create(t.INT)}
   for name, p in pairs(param) do
      stmt[name]:bind_param(unpack(p))
   end
   if not sysbench.opt.skip_trx then
      stmt.begin = con:prepare("BEGIN")
      stmt.commit = con:prepare("COMMIT")
   end
end

function thread_done()
   if sysbench.opt.mix_report then
      -- One write per line so that lines of concurrent threads do not interleave.
      io.stdout:write(string.format(
         "oltp_mix: thread=%d select=%d insert=%d update=%d delete=%d\n", sysbench.tid,
         counts.select, counts.insert, counts.update, counts.delete))
      io.stdout:flush()
   end
   for _, s in pairs(stmt) do
      s:close()
   end
   con:disconnect()
end

local function random_id()
   return sysbench.rand.default(1, sysbench.opt.table_size)
end

-- Ids of thread tid are table_size + 1 + tid, + threads, + 2*threads, ...: disjoint between
-- threads and above the original rows.
local function new_id()
   local id = sysbench.opt.table_size + 1 + sysbench.tid + next_seq * sysbench.opt.threads
   next_seq = next_seq + 1
   return id
end

-- Apply an event's inserts and deletes to `live` once they are durable. Inserts first: within
-- an event the INSERTs come before the DELETE, which may remove them again.
local function settle()
   for id in pairs(event_inserted) do
      live[id] = true
   end
   for id in pairs(event_deleted) do
      live[id] = nil
   end
   event_inserted, event_deleted = {}, {}
end

local function do_select()
   param.select[1]:set(random_id())
   stmt.select:execute()
   counts.select = counts.select + 1
end

local function do_insert()
   local id = new_id()
   param.insert[1]:set(id)
   param.insert[2]:set(random_id())
   param.insert[3]:set_rand_str(C_TEMPLATE)
   param.insert[4]:set_rand_str(PAD_TEMPLATE)
   stmt.insert:execute()
   event_inserted[id] = true
   counts.insert = counts.insert + 1
end

local function do_update()
   param.update[1]:set(random_id())
   stmt.update:execute()
   counts.update = counts.update + 1
end

local function do_delete()
   -- Everything this thread inserted so far, committed or from this event.
   local ids = {}
   for id in pairs(live) do
      ids[#ids + 1] = id
   end
   for id in pairs(event_inserted) do
      ids[#ids + 1] = id
   end
   -- A plain query, not a prepared statement: the number of ids varies.
   con:query("DELETE FROM sbtest1 WHERE id IN (" .. table.concat(ids, ",") .. ")")
   for _, id in ipairs(ids) do
      event_deleted[id] = true
   end
   counts.delete = counts.delete + 1
end

function event()
   modifications_at_start = modifications
   if not sysbench.opt.skip_trx then
      stmt.begin:execute()
   end
   for _ = 1, MIX.point_selects do
      do_select()
   end
   for _ = 1, MIX.inserts do
      do_insert()
      if sysbench.opt.skip_trx then settle() end
   end
   for _ = 1, MIX.updates_deletes do
      modifications = modifications + 1
      if modifications % 2 == 1 then
         do_update()
      else
         do_delete()
         if sysbench.opt.skip_trx then settle() end
      end
   end
   if not sysbench.opt.skip_trx then
      stmt.commit:execute()
   end
   settle()
end

-- An ignored error (deadlock, lock wait timeout; see --mysql-ignore-errors) makes sysbench
-- restart the event. Roll back what the failed event did, so that the restarted event's BEGIN
-- does not implicitly commit half of it, and forget its ids. (Statements that succeeded before
-- the error stay counted in the mix report: they were issued.)
function sysbench.hooks.before_restart_event(errdesc)
   if not sysbench.opt.skip_trx then
      con:query("ROLLBACK")
      event_inserted, event_deleted = {}, {}
      modifications = modifications_at_start
   else
      -- Autocommit: what succeeded is durable; the failed statement did nothing.
      settle()
   end
end
