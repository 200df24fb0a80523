CREATE EXTERNAL TABLE IF NOT EXISTS `analytics`.`llm_events` (
  `seq` bigint,
  `ts` double,
  `kind` string,
  `experiment_name` string,
  `run_name` string,
  `tracker` string,
  `run_id` string,
  `parent_run_id` string,
  `name` string,
  `duration` double,
  `tags` array<string>,
  `metadata` string,
  `data` string
)
PARTITIONED BY (`experiment` string, `run` string, `date` string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES (
  'mapping.experiment_name' = 'experiment',
  'mapping.run_name' = 'run'
)
LOCATION 's3://my-bucket/traces/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.experiment.type' = 'injected',
  'projection.run.type' = 'injected',
  'projection.date.type' = 'date',
  'projection.date.format' = 'yyyy-MM-dd',
  'projection.date.range' = '2024-01-01,NOW',
  'projection.date.interval' = '1',
  'projection.date.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://my-bucket/traces/experiment=${experiment}/run=${run}/date=${date}/'
);
