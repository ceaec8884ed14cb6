//! Sentences the demo's load generator sends, written for moescope (not from a corpus).

/// English.
pub const EN: &[&str] = &[
    "The night shift keeps an eye on the dashboards while the model answers questions.",
    "Please summarize the attached quarterly report in three short bullet points.",
    "How do I reset my password if I no longer have access to my old email address?",
    "The train to the airport leaves every twenty minutes from the second platform.",
    "Write a short poem about autumn leaves falling on a quiet mountain lake.",
    "Our customers in Tel Aviv and Osaka asked for the same feature last week.",
    "Explain the difference between a process and a thread to a new engineer.",
    "The recipe needs two cups of flour, one egg and a pinch of salt.",
    "Translate this paragraph into plain language for a general audience.",
    "Which experts does the router pick for this sentence, and does it matter?",
    "The library opens at nine in the morning and closes at six in the evening.",
    "Send the meeting notes to everyone who joined the call this afternoon.",
];

/// Hebrew.
pub const HE: &[&str] = &[
    "משמרת הלילה עוקבת אחרי לוחות הבקרה בזמן שהמודל עונה על שאלות.",
    "אנא סכם את הדוח הרבעוני המצורף בשלוש נקודות קצרות.",
    "איך אני מאפס את הסיסמה אם אין לי גישה לכתובת הדואר הישנה?",
    "הרכבת לשדה התעופה יוצאת כל עשרים דקות מהרציף השני.",
    "כתוב שיר קצר על עלי שלכת הנופלים על אגם הררי שקט.",
    "הסבר את ההבדל בין תהליך לבין תהליכון למהנדסת חדשה.",
    "המתכון דורש שתי כוסות קמח, ביצה אחת וקורט מלח.",
    "הספרייה נפתחת בתשע בבוקר ונסגרת בשש בערב.",
    "שלח את סיכום הפגישה לכל מי שהצטרף לשיחה היום אחר הצהריים.",
    "באילו מומחים הנתב בוחר עבור המשפט הזה, והאם זה משנה?",
];

/// Japanese.
pub const JA: &[&str] = &[
    "夜勤の担当者は、モデルが質問に答えている間ダッシュボードを見守っている。",
    "添付した四半期報告書を三つの短い箇条書きにまとめてください。",
    "古いメールアドレスにアクセスできない場合、パスワードはどう再設定しますか。",
    "空港行きの電車は二番線から二十分ごとに出発します。",
    "静かな山の湖に落ちる紅葉について短い詩を書いてください。",
    "プロセスとスレッドの違いを新しいエンジニアに説明してください。",
    "このレシピには小麦粉二カップと卵一個、塩ひとつまみが必要です。",
    "図書館は朝九時に開き、夕方六時に閉まります。",
    "今日の午後の会議に参加した全員に議事録を送ってください。",
    "ルーターはこの文に対してどのエキスパートを選ぶのか、それは重要なのか。",
];

/// The sentences of a language tag, if the generator has any.
pub fn for_tag(tag: &str) -> Option<&'static [&'static str]> {
    match tag {
        "en" => Some(EN),
        "he" => Some(HE),
        "ja" => Some(JA),
        _ => None,
    }
}
