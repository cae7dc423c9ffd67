-- canhbao schema v15: Decision 18/2021 Art. 46 is one hazard for flash floods, landslides
-- and land subsidence due to rain or flow (they share its levels). Rows of the former
-- "landslide" hazard become "flash_flood"; where both exist for one place, the higher
-- current level is kept.
DELETE FROM area_levels
WHERE hazard = 'flash_flood'
  AND EXISTS (SELECT 1 FROM area_levels l
              WHERE l.hazard = 'landslide' AND l.status = area_levels.status
                AND l.commune = area_levels.commune AND l.level > area_levels.level);
DELETE FROM area_levels
WHERE hazard = 'landslide'
  AND EXISTS (SELECT 1 FROM area_levels f
              WHERE f.hazard = 'flash_flood' AND f.status = area_levels.status
                AND f.commune = area_levels.commune);
UPDATE area_levels SET hazard = 'flash_flood' WHERE hazard = 'landslide';
DELETE FROM bulletins
WHERE hazard = 'landslide'
  AND EXISTS (SELECT 1 FROM bulletins f
              WHERE f.hazard = 'flash_flood' AND f.identifier = bulletins.identifier);
UPDATE bulletins SET hazard = 'flash_flood' WHERE hazard = 'landslide';
UPDATE assessments SET hazard = 'flash_flood' WHERE hazard = 'landslide';
UPDATE alerts SET hazard = 'flash_flood' WHERE hazard = 'landslide';

-- A bulletin its sender marks as an emergency ("khẩn cấp" in its event or headline) is
-- relayed as an Emergency, played at once (Circular 39/2020; reference §4.2).
ALTER TABLE bulletins ADD COLUMN emergency BIGINT NOT NULL DEFAULT 0;

-- How a bulletin's sender graded it (CAP urgency/severity/certainty): the alert that
-- relays its level keeps it in its own CAP document.
ALTER TABLE bulletins ADD COLUMN grade TEXT;
ALTER TABLE alerts ADD COLUMN grade TEXT;
