-- trial-to-full-size: a paid joint_care trial pack exactly 7 local days ago, no paid full-size
-- joint_care purchase in the last 7 days (today included), reachable on WeCom or SMS, not tagged
-- do_not_disturb. Candidates from that day's orders.
WITH candidates AS (
    SELECT DISTINCT o.member_id
    FROM orders o JOIN order_items i ON i.order_id = o.order_id
    WHERE i.category = 'joint_care' AND i.trial = true AND o.status = 'paid' AND o.paid_at IS NOT NULL
      AND o.paid_at >= :d7 AND o.paid_at < :d6 AND o.paid_at <= :at
      AND NOT EXISTS (
          SELECT 1 FROM orders f JOIN order_items fi ON fi.order_id = f.order_id
          WHERE f.member_id = o.member_id AND fi.category = 'joint_care' AND fi.trial = false
            AND f.status = 'paid' AND f.paid_at >= :d7 AND f.paid_at < :dm1 AND f.paid_at <= :at)
),
per_platform AS (
    SELECT o.member_id, o.platform, count(*) AS n, sum(o.amount_fen) AS fen, max(o.paid_at) AS last_paid_at
    FROM orders o JOIN candidates c ON c.member_id = o.member_id
    WHERE o.status = 'paid' AND o.paid_at IS NOT NULL AND o.paid_at <= :at
    GROUP BY o.member_id, o.platform
),
stats AS (
    SELECT member_id, sum(n) AS order_count, sum(fen) AS total_fen, max(last_paid_at) AS last_purchase_at,
           max(CASE WHEN rk = 1 THEN platform END) AS habitual_platform
    FROM (SELECT p.*, row_number() OVER (PARTITION BY member_id ORDER BY n DESC, last_paid_at DESC, platform) AS rk
          FROM per_platform p) ranked
    GROUP BY member_id
)
SELECT m.member_id, m.phone, m.sms_opt_out, m.call_opt_out, m.wecom_external_userid, m.wecom_staff_userid,
       m.oa_openid, m.oa_subscribed, s.order_count, s.total_fen, s.habitual_platform
FROM candidates c
JOIN members m ON m.member_id = c.member_id
LEFT JOIN stats s ON s.member_id = m.member_id
WHERE ((m.wecom_external_userid IS NOT NULL AND m.wecom_external_userid <> ''
        AND m.wecom_staff_userid IS NOT NULL AND m.wecom_staff_userid <> '')
       OR (m.phone IS NOT NULL AND m.phone <> '' AND m.sms_opt_out = false))
  AND NOT EXISTS (SELECT 1 FROM member_tags t WHERE t.member_id = m.member_id AND t.tag = 'do_not_disturb')
ORDER BY m.member_id
