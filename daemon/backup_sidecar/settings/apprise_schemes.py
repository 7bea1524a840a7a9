"""The URL schemes apprise knows (`apprise.manager_plugins.NotificationManager().schemas()`
of the apprise in uv.lock), so that a typo in `notify.urls` is refused when the configuration
is loaded, not at the first message, without importing apprise (0.2 s) into every command.
tests/test_notify_settings.py fails when an apprise upgrade changes the set: regenerate it
with the snippet in that test's docstring.
"""

from __future__ import annotations

from typing import Final

#: apprise 2.3.0
APPRISE_SCHEMES: Final = frozenset(
    {
        "46elks", "acs", "amqp", "amqps", "apprise", "apprises", "aprs", "atalk", "awswhatsapp",
        "azure", "bale", "bark", "barks", "betterstack", "blink1", "bluesky", "brevo", "bsky",
        "bulksms", "bulkvs", "burstsms", "chanify", "clickatell", "clicksend", "cliq", "cm",
        "d7sms", "dapnet", "dbus", "deltachat", "deltachats", "dingtalk", "discord", "dot",
        "eight00com", "elks", "emby", "embys", "enigma2", "enigma2s", "evolution", "evolutions",
        "exotel", "fcm", "feishu", "firehydrant", "flock", "flowtriq", "flowtriqs", "fluxer",
        "fluxers", "form", "forms", "freemobile", "gchat", "gio", "github", "glib", "gnome",
        "goalert", "goalerts", "gorush", "gorushs", "gotify", "gotifys", "groundmail", "groupme",
        "growl", "guilded", "gupshup", "hassio", "hassios", "httpsms", "humhub", "humhubs", "ifttt",
        "ilert", "incidentio", "infobip", "instagram", "irc", "ircs", "jellyfin", "jellyfins",
        "jira", "join", "json", "jsons", "kakao", "kakaotalk", "kaleyra", "kavenegar", "kde", "klr",
        "kodi", "kodis", "kook", "kudosity", "kumulos", "lametric", "lametrics", "lark", "lauther",
        "lfg", "line", "macosx", "mailersend", "mailgun", "mailto", "mailtos", "mastodon",
        "mastodons", "matrix", "matrixs", "misskey", "misskeys", "mmost", "mmosts", "mobilemessage",
        "mobilemsg", "mqtt", "mqtts", "msg91", "msgbird", "ncloud", "nclouds", "nctalk", "nctalks",
        "nexmo", "nostr", "notica", "noticas", "notifiarr", "notifico", "notificos", "notifyapp",
        "notifyre", "ntfy", "ntfys", "o365", "octopush", "onebot", "onebots", "onesignal",
        "opsgenie", "opsimate", "opsimates", "pagerduty", "pagertree", "parsep", "parseps", "pbul",
        "pinglet", "pinglets", "pingram", "pjet", "pjets", "plivo", "postmark", "pover", "prowl",
        "psafer", "psafers", "push", "pushdeer", "pushdeers", "pushed", "pushme", "pushplus",
        "pushward", "pushy", "qq", "qt", "reddit", "resend", "revolt", "ringc", "rocket", "rockets",
        "rsyslog", "ryver", "schan", "sendgrid", "sendpulse", "serwersms", "ses", "session",
        "sessions", "seven", "sfr", "signal", "signalgrid", "signals", "signl4", "simplepush",
        "sinch", "slack", "smpp", "smpps", "smsc", "smseagle", "smseagles", "smsmanager", "smsmgr",
        "smstunnel", "smtp2go", "sns", "sogs", "sparkpost", "spike", "splunk", "spugpush", "spush",
        "squadcast", "stackfield", "strmlabs", "synology", "synologys", "syslog", "telesign",
        "telnyx", "tgram", "threema", "toot", "toots", "trigv", "trigvs", "tweet", "twilio",
        "twist", "twitter", "vapid", "viber", "victorops", "voipms", "vonage", "webex", "wechat",
        "wecom", "wecombot", "whapi", "whatsapp", "windows", "workflow", "workflows", "wpush",
        "wxpusher", "wxteams", "x", "xbmc", "xbmcs", "xmatters", "xml", "xmls", "xmpp", "xmpps",
        "youlmk", "zalo", "zcliq", "zohocliq", "zoom", "zulip"
    }
)  # fmt: skip
